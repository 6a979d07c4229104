//! PostgreSQL stopped under load (issue 12, fault 3): holds go on being
//! answered from Redis, login and reads that need PostgreSQL answer 503 with
//! Retry-After (never 500), and the writer retries with backoff and catches up.
//! The test stops only a PostgreSQL cluster of its own, made with initdb.

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use herdgate::config;

use crate::{
    faults::{Answer, free_port, hold_load},
    helpers::{Isolation, TestApp, eventually, spawn_app_on, user_ids},
};

/// A PostgreSQL cluster of this test's own (trust auth, a free port, data in
/// a temporary directory), stopped and removed when dropped. As root, its
/// programs run as the `postgres` user, as PostgreSQL requires.
pub struct PrivatePostgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        let bin = newest_postgres_bin();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("herdgate-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        let uid = Command::new("id").arg("-u").output().unwrap();
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(&dir));
        }
        let pg = PrivatePostgres {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = pg.dir.join("data");
        run(pg.command("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ]));
        run(&mut pg.start_command());
        pg
    }

    /// `program` of this cluster's PostgreSQL, run as its owner.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = match self.as_postgres {
            true => Command::new("runuser"),
            false => Command::new(&path),
        };
        if self.as_postgres {
            command.args(["-u", "postgres", "--"]).arg(&path);
        }
        command.stdout(std::process::Stdio::null());
        command
    }

    fn start_command(&self) -> Command {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let mut command = self.command("pg_ctl");
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-o", &options, "start"]);
        command
    }

    fn stop_command(&self, mode: &str) -> Command {
        let mut command = self.command("pg_ctl");
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", mode, "-w", "stop"]);
        command
    }

    /// `pg_ctl stop -m fast`: sessions are ended, the server shuts down.
    pub async fn stop(&self) {
        run_async(self.stop_command("fast")).await;
    }

    /// Starts the stopped cluster again on the same port and data.
    pub async fn start_again(&self) {
        run_async(self.start_command()).await;
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop_command("immediate").status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest installed PostgreSQL's `bin` directory.
fn newest_postgres_bin() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql");
    versions
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .max()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
        .1
}

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{command:?}: {out:?}");
}

async fn run_async(command: Command) {
    let out = tokio::process::Command::from(command)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// One answer to a request that needs PostgreSQL.
struct Probe {
    started: Instant,
    done: Instant,
    what: &'static str,
    status: u16,
    retry_after: bool,
    problem: bool,
}

async fn probe(what: &'static str, request: reqwest::RequestBuilder) -> Probe {
    let started = Instant::now();
    let response = request.send().await.unwrap();
    let headers = response.headers();
    Probe {
        started,
        done: Instant::now(),
        what,
        status: response.status().as_u16(),
        retry_after: headers.contains_key("retry-after"),
        problem: headers
            .get("content-type")
            .is_some_and(|ct| ct == "application/problem+json"),
    }
}

/// Every 200 ms until `until`: a login, an event PostgreSQL alone could
/// know (not loaded in Redis: 404 while it answers), and a booking Redis
/// does not have (404 from PostgreSQL while it answers).
async fn probe_postgres(app: &TestApp, user: i64, until: Instant) -> Vec<Probe> {
    let token = app.token(user);
    let mut probes = Vec::new();
    let mut i = 0u32;
    while Instant::now() < until {
        i += 1;
        let email = herdgate::seed::load_user_email(i % 50 + 1);
        let login = serde_json::json!({"email": email, "password": "password"});
        let url = |path: String| format!("{}{path}", app.base);
        probes.push(
            probe(
                "login",
                app.http.post(url("/api/users/login".into())).json(&login),
            )
            .await,
        );
        // A fresh id each time, so no cached answer stands in for PostgreSQL.
        probes.push(
            probe(
                "event",
                app.http.get(url(format!("/api/events/{}", 100_000 + i))),
            )
            .await,
        );
        let booking = herdgate::booking_id::new(1).unwrap();
        probes.push(
            probe(
                "booking",
                app.http
                    .get(url(format!("/api/bookings/{booking}")))
                    .bearer_auth(&token),
            )
            .await,
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    probes
}

#[tokio::test]
async fn postgres_stopped_under_load_holds_go_on_reads_get_503_and_the_writer_catches_up() {
    // Enough users that the load never runs out before `until`.
    const SEATS: i64 = 6_000;
    const USERS: u32 = 3_000;
    // Dropped last: the app and its database go first.
    let postgres = PrivatePostgres::start();
    let iso = Isolation::with_seed_on(
        &postgres.admin_url(),
        herdgate::seed::SeedOptions {
            demo_seats: SEATS as u32,
            users: USERS,
        },
    )
    .await;
    let mut app = spawn_app_on(iso, |env| {
        // The probes log in every 200 ms from one address.
        env.insert(config::ENV_LOGIN_CLIENT_RATE.into(), "100000".into());
        env.insert(config::ENV_LOGIN_ACCOUNT_RATE.into(), "100000".into());
    })
    .await;
    let users = user_ids(&app.iso.pg().await).await;

    let start = Instant::now();
    // Down from 2 s to 8 s, then 4 s of load after the restart.
    let until = start + Duration::from_secs(12);
    let (answers, probes, (stopped, restarting)) = tokio::join!(
        // At most 7 requests per user: below the per-user hold limit of 8.
        hold_load(&app, &users, SEATS, 6, until, 7 * USERS as usize),
        probe_postgres(&app, users[0], until),
        async {
            tokio::time::sleep_until((start + Duration::from_secs(2)).into()).await;
            postgres.stop().await;
            let stopped = Instant::now();
            tokio::time::sleep(Duration::from_secs(6)).await;
            let restarting = Instant::now();
            postgres.start_again().await;
            (stopped, restarting)
        }
    );

    // Holds never need PostgreSQL: 201, 409, or 200 for the user's own hold.
    let mut by_status = BTreeMap::<(u16, String), usize>::new();
    for a in &answers {
        *by_status.entry((a.status, a.problem.clone())).or_default() += 1;
    }
    println!("hold answers: {by_status:?}");
    assert!(
        answers.iter().all(|a| matches!(a.status, 200 | 201 | 409)),
        "{by_status:?}"
    );
    let placed: Vec<&Answer> = answers.iter().filter(|a| a.status == 201).collect();
    let while_down = placed
        .iter()
        .filter(|a| a.started > stopped && a.done < restarting)
        .count();
    assert!(
        while_down >= 50,
        "only {while_down} holds placed while PostgreSQL was down"
    );
    assert!(
        placed.iter().any(|a| a.started > restarting),
        "the load ran past the restart"
    );
    crate::faults::assert_own_holds_are_theirs(&answers);

    // Reads that need PostgreSQL: 503 problems with Retry-After while it is
    // down, their usual answers otherwise, and never any other 5xx.
    let down = |p: &Probe| p.started > stopped && p.done < restarting;
    let mut by_probe = BTreeMap::<(&str, bool, u16), usize>::new();
    for p in &probes {
        *by_probe.entry((p.what, down(p), p.status)).or_default() += 1;
    }
    println!("probes (what, while down, status): {by_probe:?}");
    for p in &probes {
        assert!(
            p.status < 500 || (p.status == 503 && p.retry_after && p.problem),
            "{} answered {} (retry-after {}, problem {})",
            p.what,
            p.status,
            p.retry_after,
            p.problem
        );
        if down(p) {
            assert_eq!(p.status, 503, "{} while PostgreSQL was down", p.what);
        }
    }
    for what in ["login", "event", "booking"] {
        assert!(
            by_probe.get(&(what, true, 503)).copied().unwrap_or(0) >= 5,
            "too few {what} probes while PostgreSQL was down: {by_probe:?}"
        );
    }

    // The writer catches up: every 201 in PostgreSQL exactly once, nothing else.
    let acknowledged: HashSet<uuid::Uuid> = placed.iter().map(|a| a.booking.unwrap()).collect();
    assert_eq!(
        acknowledged.len(),
        placed.len(),
        "a booking id answered twice"
    );
    let pg = app.iso.pg().await;
    let read = || async {
        pg.query("SELECT id, status FROM bookings WHERE event_id = 1", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, uuid::Uuid>(0), r.get::<_, String>(1)))
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(30), || async {
        read().await.len() >= acknowledged.len()
    })
    .await;
    let caught_up = restarting.elapsed();
    let stored = read().await;
    let stored_ids: HashSet<uuid::Uuid> = stored.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        stored_ids, acknowledged,
        "PostgreSQL has other bookings than the 201s"
    );
    assert!(stored.iter().all(|(_, status)| status == "PENDING"));
    let double = crate::faults::assert_no_seat_booked_twice(&pg).await;
    app.assert_stores_agree().await;
    let (queued, dead) = app.shut_down_and_count_queued().await;
    println!(
        "acknowledged {} ({while_down} while PostgreSQL was down {:?}), persisted {}, \
         lost 0, double-booked {double}, dead-lettered {dead}, left queued {queued}; \
         PostgreSQL matched {caught_up:?} after the restart began",
        placed.len(),
        restarting - stopped,
        stored.len(),
    );
    assert_eq!(
        (queued, dead),
        (0, 0),
        "messages left (writer queue, dead letters)"
    );
}

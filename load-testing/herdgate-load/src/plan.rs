//! What a load run does: its scenario, sizes and stop rule, and the journey of
//! each virtual user (which call comes next, given the answer to the last one).
//!
//! Everything here is pure logic, so the planning is unit-tested without a server.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    time::Duration,
};

use serde::Deserialize;

use super::LoadArgs;

/// The longest any run may last, whatever else stops it.
pub const MAX_RUN: Duration = Duration::from_secs(600);

/// The most connections a herd opens by default: one per user, up to this.
const HERD_CONNECTIONS: usize = 10_000;
const DEFAULT_CONNECTIONS: usize = 256;
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Long enough for the admission rate to be measured over many 10 s windows.
const ROOM_DURATION: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Many users holding random seats of a pool, as an ordinary busy day.
    Normal,
    /// Users on a few seats (one by default), every connection released at once.
    Herd,
    /// Every request a different seat: the most work per request.
    Distinct,
    /// The on-sale: users race for every seat, moving on after each 409 until none are left.
    Sellout,
    /// Browse the event and a page of seats, hold one, then confirm, cancel or walk away.
    Mixed,
    /// Buyers of an event behind a waiting room: join, look again when the server
    /// says, book once admitted; some walk away (see `room`).
    #[value(name = "waiting-room")]
    #[serde(rename = "waiting-room")]
    WaitingRoom,
    /// Every request a join of the event's waiting room, by the next user (one script call).
    Join,
    /// Every request a look at one's place, by the next user (joined before: `join` first).
    Look,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Normal => "normal",
            Scenario::Herd => "herd",
            Scenario::Distinct => "distinct",
            Scenario::Sellout => "sellout",
            Scenario::Mixed => "mixed",
            Scenario::WaitingRoom => "waiting-room",
            Scenario::Join => "join",
            Scenario::Look => "look",
        }
    }

    /// The event a scenario uses unless `--event` says: the seed's room (event
    /// 5) for the waiting-room scenarios, event 1 for the others.
    pub fn default_event(self) -> i64 {
        match self {
            Scenario::WaitingRoom | Scenario::Join | Scenario::Look => 5,
            _ => 1,
        }
    }
}

/// When a run stops: whichever comes first, the scenario running out included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stop {
    pub requests: Option<u64>,
    pub deadline: Duration,
}

/// The sizes a run resolves to once the scenario's defaults are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Sizes {
    pub event: i64,
    pub users: usize,
    /// How many seats to take from the event; `None` for all available ones.
    pub seats: Option<usize>,
    pub connections: usize,
    pub stop: Stop,
    pub rate: Option<f64>,
}

impl Sizes {
    /// Applies the scenario's defaults to what the command line left open.
    pub fn resolve(args: &LoadArgs) -> Result<Self, String> {
        let users = args.users as usize;
        let seats = args.seats.map(|s| s as usize).or(match args.scenario {
            // Joins and looks hold no seat.
            Scenario::Herd | Scenario::Join | Scenario::Look => Some(1),
            Scenario::Normal => Some(1_000),
            Scenario::Distinct | Scenario::Sellout | Scenario::Mixed | Scenario::WaitingRoom => {
                None
            }
        });
        let connections = args.connections.map_or(
            match args.scenario {
                Scenario::Herd => users.min(HERD_CONNECTIONS),
                // A connection per buyer, as per browser.
                Scenario::WaitingRoom => users,
                _ => DEFAULT_CONNECTIONS.min(users),
            },
            |c| c as usize,
        );
        if args.scenario == Scenario::WaitingRoom && connections != users {
            return Err(
                "waiting-room opens one connection per user: leave --connections out".into(),
            );
        }
        // Count-based scenarios stop when they run out; time-based ones need a clock.
        let runs_out = matches!(
            args.scenario,
            Scenario::Herd | Scenario::Distinct | Scenario::Sellout
        );
        let requests = args.requests.or(match args.scenario {
            Scenario::Herd if args.duration.is_none() => Some(users as u64),
            _ => None,
        });
        let deadline = match args.duration {
            Some(d) if d > MAX_RUN => return Err(format!("--duration is at most {MAX_RUN:?}")),
            Some(d) => d,
            None if runs_out || requests.is_some() => MAX_RUN,
            None if args.scenario == Scenario::WaitingRoom => ROOM_DURATION,
            None => DEFAULT_DURATION,
        };
        let rate = match args.rate {
            Some(r) if !(r.is_finite() && r > 0.0) => {
                return Err("--rate must be a positive number of requests per second".into());
            }
            r => r,
        };
        Ok(Sizes {
            event: args.event.unwrap_or(args.scenario.default_event()),
            users,
            seats,
            connections,
            stop: Stop { requests, deadline },
            rate,
        })
    }
}

/// One HTTP call of a virtual user; `user` indexes the run's user list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Call {
    Event,
    Seats {
        after: i64,
    },
    Hold {
        user: usize,
        seat: i64,
    },
    Confirm {
        user: usize,
        booking: String,
    },
    Cancel {
        user: usize,
        booking: String,
    },
    /// `POST /waiting-room/:event/join`.
    Join {
        user: usize,
    },
    /// `GET /waiting-room/:event`.
    Look {
        user: usize,
    },
    /// `GET /waiting-room/:event/stats`.
    RoomStats,
    /// `PATCH /waiting-room/:event/settings` with these settings (JSON), as the operator.
    ChangeRoom {
        settings: String,
    },
}

/// State every worker shares: the next user or seat to hand out, and, in a
/// sellout, which seats are known to be gone.
pub struct Shared {
    pub scenario: Scenario,
    pub users: usize,
    pub seats: Vec<i64>,
    next: AtomicU64,
    taken: Vec<AtomicBool>,
    left: AtomicUsize,
}

impl Shared {
    pub fn new(scenario: Scenario, users: usize, seats: Vec<i64>) -> Self {
        let taken = seats.iter().map(|_| AtomicBool::new(false)).collect();
        let left = AtomicUsize::new(seats.len());
        Shared {
            scenario,
            users,
            seats,
            next: AtomicU64::new(0),
            taken,
            left,
        }
    }

    /// The next virtual user's journey, or `None` when the scenario has run out.
    pub fn next_journey(&self, rng: &mut fastrand::Rng) -> Option<Journey> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        match self.scenario {
            // Users take turns; past the last one the herd starts again from the first.
            Scenario::Herd => Some(Journey::single(
                n % self.users,
                self.seats[n % self.seats.len()],
            )),
            Scenario::Distinct => {
                let seat = *self.seats.get(n)?;
                Some(Journey::single(n % self.users, seat))
            }
            Scenario::Normal => {
                let seat = self.seats[rng.usize(..self.seats.len())];
                Some(Journey::single(rng.usize(..self.users), seat))
            }
            Scenario::Sellout => {
                (n < self.users && self.left() > 0).then_some(Journey::Sellout { user: n })
            }
            Scenario::Mixed => Some(Journey::Browse {
                user: rng.usize(..self.users),
            }),
            // Users take turns, as in a herd; the waiting room's own driver
            // (`room`) runs its buyers, not journeys.
            Scenario::Join | Scenario::WaitingRoom => Some(Journey::Visit(Call::Join {
                user: n % self.users,
            })),
            Scenario::Look => Some(Journey::Visit(Call::Look {
                user: n % self.users,
            })),
        }
    }

    /// Seats not yet known to be taken.
    pub fn left(&self) -> usize {
        self.left.load(Ordering::Relaxed)
    }

    /// Marks a seat gone: its 201 or 409 was seen.
    fn mark_taken(&self, index: usize) {
        if !self.taken[index].swap(true, Ordering::Relaxed) {
            self.left.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A seat not known to be taken, from a random starting point; `None` when sold out.
    fn pick_free_seat(&self, rng: &mut fastrand::Rng) -> Option<usize> {
        if self.left() == 0 {
            return None;
        }
        let len = self.taken.len();
        let start = rng.usize(..len);
        (start..len)
            .chain(0..start)
            .find(|&i| !self.taken[i].load(Ordering::Relaxed))
    }
}

/// One virtual user's way through a scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum Journey {
    /// One hold request, then done (normal, herd, distinct).
    Single {
        user: usize,
        seat: i64,
    },
    /// One waiting-room visit, then done (join, look).
    Visit(Call),
    /// Tries seat after seat until one is held, the user hits its limit, or none are left.
    Sellout {
        user: usize,
    },
    /// Mixed, first step: look at the event.
    Browse {
        user: usize,
    },
    /// Mixed: look at a page of available seats.
    PickSeat {
        user: usize,
    },
    /// Mixed: hold the seat picked from the page.
    Hold {
        user: usize,
        seat: i64,
    },
    /// Mixed: confirm, cancel or walk away from the hold.
    Settle {
        user: usize,
        booking: String,
        choice: Settle,
    },
    Finished,
}

/// What a mixed user does with a hold: half confirm, 30% cancel, the rest walk away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Confirm,
    Cancel,
    Leave,
}

impl Settle {
    pub fn roll(rng: &mut fastrand::Rng) -> Self {
        match rng.u8(..100) {
            0..50 => Settle::Confirm,
            50..80 => Settle::Cancel,
            _ => Settle::Leave,
        }
    }
}

/// What an answer said, as far as a journey cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 201: the hold is ours.
    Held,
    /// 409: the seat is someone else's.
    Taken,
    /// Anything else, a transport failure included.
    Other,
}

impl Answer {
    pub fn of(status: Option<u16>) -> Self {
        match status {
            Some(201) => Answer::Held,
            Some(409) => Answer::Taken,
            _ => Answer::Other,
        }
    }
}

#[derive(Deserialize)]
struct SeatPage {
    seats: Vec<SeatRef>,
}

#[derive(Deserialize)]
struct SeatRef {
    id: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    booking_id: String,
}

/// The booking id of a 201's body.
pub fn booking_id(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Created>(body)
        .ok()
        .map(|c| c.booking_id)
}

impl Journey {
    fn single(user: usize, seat: i64) -> Self {
        Journey::Single { user, seat }
    }

    /// The next call, or `None` when this user is done.
    pub fn next_call(&mut self, shared: &Shared, rng: &mut fastrand::Rng) -> Option<Call> {
        match std::mem::replace(self, Journey::Finished) {
            Journey::Finished => None,
            Journey::Single { user, seat } => Some(Call::Hold { user, seat }),
            Journey::Visit(call) => Some(call),
            Journey::Sellout { user } => {
                *self = Journey::Sellout { user };
                let seat = shared.seats[shared.pick_free_seat(rng)?];
                Some(Call::Hold { user, seat })
            }
            Journey::Browse { user } => {
                *self = Journey::Browse { user };
                Some(Call::Event)
            }
            Journey::PickSeat { user } => {
                *self = Journey::PickSeat { user };
                // Browse from a random place, as people scroll a seat map.
                let after = match shared.seats.len() {
                    0 => 0,
                    n => shared.seats[rng.usize(..n)] - 1,
                };
                Some(Call::Seats { after })
            }
            Journey::Hold { user, seat } => {
                *self = Journey::Hold { user, seat };
                Some(Call::Hold { user, seat })
            }
            Journey::Settle {
                user,
                booking,
                choice,
            } => match choice {
                Settle::Confirm => Some(Call::Confirm { user, booking }),
                Settle::Cancel => Some(Call::Cancel { user, booking }),
                Settle::Leave => None,
            },
        }
    }

    /// Takes in the answer to the call just made: its status (`None` after a
    /// transport failure) and body.
    pub fn observe(
        &mut self,
        call: &Call,
        status: Option<u16>,
        body: &[u8],
        shared: &Shared,
        rng: &mut fastrand::Rng,
    ) {
        let answer = Answer::of(status);
        *self = match std::mem::replace(self, Journey::Finished) {
            Journey::Sellout { user } => {
                if let Call::Hold { seat, .. } = call
                    && answer != Answer::Other
                    && let Ok(index) = shared.seats.binary_search(seat)
                {
                    shared.mark_taken(index);
                }
                // A 409 sends the user to another seat; anything else ends the try.
                if answer == Answer::Taken {
                    Journey::Sellout { user }
                } else {
                    Journey::Finished
                }
            }
            Journey::Browse { user } if status == Some(200) => Journey::PickSeat { user },
            Journey::PickSeat { user } if status == Some(200) => {
                let seats = serde_json::from_slice::<SeatPage>(body)
                    .map(|p| p.seats)
                    .unwrap_or_default();
                if seats.is_empty() {
                    Journey::Finished
                } else {
                    let seat = seats[rng.usize(..seats.len())].id;
                    Journey::Hold { user, seat }
                }
            }
            Journey::Hold { user, .. } if answer == Answer::Held => match booking_id(body) {
                Some(booking) => Journey::Settle {
                    user,
                    booking,
                    choice: Settle::roll(rng),
                },
                None => Journey::Finished,
            },
            _ => Journey::Finished,
        };
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn args(line: &str) -> LoadArgs {
        LoadArgs::parse_from(std::iter::once("herdgate-load").chain(line.split_whitespace()))
    }

    fn sizes(line: &str) -> Sizes {
        Sizes::resolve(&args(line)).unwrap()
    }

    /// Runs journeys to the end against a server that answers `answer(call)`.
    fn drive(shared: &Shared, mut answer: impl FnMut(&Call) -> (u16, String)) -> Vec<Call> {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut calls = Vec::new();
        while let Some(mut journey) = shared.next_journey(&mut rng) {
            while let Some(call) = journey.next_call(shared, &mut rng) {
                let (status, body) = answer(&call);
                journey.observe(&call, Some(status), body.as_bytes(), shared, &mut rng);
                calls.push(call);
            }
            if calls.len() > 10_000 {
                break;
            }
        }
        calls
    }

    #[test]
    fn each_scenario_has_defaults_that_stop_by_themselves() {
        let herd = sizes("herd --users 10000");
        assert_eq!((herd.connections, herd.seats), (10_000, Some(1)));
        assert_eq!(herd.stop.requests, Some(10_000));
        let herd = sizes("herd --users 50000 --duration 5s");
        assert_eq!(herd.connections, HERD_CONNECTIONS);
        assert_eq!(herd.stop.requests, None);
        assert_eq!(herd.stop.deadline, Duration::from_secs(5));

        let distinct = sizes("distinct --users 100");
        assert_eq!((distinct.connections, distinct.seats), (100, None));
        assert_eq!(distinct.stop.deadline, MAX_RUN);

        let normal = sizes("normal --rate 500");
        assert_eq!(normal.stop.deadline, DEFAULT_DURATION);
        assert_eq!(normal.rate, Some(500.0));
        assert_eq!(sizes("mixed --requests 10").stop.deadline, MAX_RUN);
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(Sizes::resolve(&args("normal --rate 0")).is_err());
        assert!(Sizes::resolve(&args("normal --rate=-5")).is_err());
        assert!(Sizes::resolve(&args("normal --duration 2h")).is_err());
        let parse = |line: &str| {
            LoadArgs::try_parse_from(
                std::iter::once("herdgate-load").chain(line.split_whitespace()),
            )
        };
        assert!(parse("herd --duration 1s --requests 5").is_err());
        assert!(parse("stampede").is_err());
        assert!(parse("herd --users 0").is_err());
    }

    #[test]
    fn a_herd_spreads_its_users_over_its_seats() {
        let shared = Shared::new(Scenario::Herd, 4, vec![10, 11]);
        let mut rng = fastrand::Rng::with_seed(1);
        let holds: Vec<Call> = (0..6)
            .map(|_| {
                let mut journey = shared.next_journey(&mut rng).unwrap();
                let call = journey.next_call(&shared, &mut rng).unwrap();
                assert_eq!(journey.next_call(&shared, &mut rng), None);
                call
            })
            .collect();
        let expect = |user, seat| Call::Hold { user, seat };
        assert_eq!(holds[0], expect(0, 10));
        assert_eq!(holds[1], expect(1, 11));
        assert_eq!(holds[4], expect(0, 10), "users start over after the last");
    }

    #[test]
    fn distinct_gives_every_seat_once_and_then_runs_out() {
        let shared = Shared::new(Scenario::Distinct, 2, (1..=5).collect());
        let calls = drive(&shared, |_| (201, String::new()));
        let seats: Vec<i64> = calls
            .iter()
            .map(|c| match c {
                Call::Hold { seat, .. } => *seat,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(seats, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_sellout_moves_on_after_409_until_every_seat_is_gone() {
        // Three seats, ten users, seat 2 already someone else's: the server
        // gives each seat to the first asker.
        let shared = Shared::new(Scenario::Sellout, 10, vec![1, 2, 3]);
        let mut owner = std::collections::HashMap::from([(2, 99)]);
        let calls = drive(&shared, |call| match call {
            Call::Hold { user, seat } => match owner.entry(*seat).or_insert(*user) {
                o if *o == *user => (201, format!(r#"{{"bookingId":"b{seat}"}}"#)),
                _ => (409, String::new()),
            },
            other => panic!("{other:?}"),
        });
        assert_eq!(owner.len(), 3);
        assert_eq!(shared.left(), 0);
        let asked_for_2 = calls
            .iter()
            .filter(|c| matches!(c, Call::Hold { seat: 2, .. }))
            .count();
        assert_eq!(asked_for_2, 1, "the 409 marks the seat gone for everyone");
        // Nobody asks again for a seat they have seen taken, and the run ends.
        let mut asked = std::collections::HashSet::new();
        for call in &calls {
            assert!(asked.insert(call.clone()), "{call:?} asked twice");
        }
        assert!(calls.len() <= 3 * 3, "{} calls for 3 seats", calls.len());
    }

    #[test]
    fn a_sellout_user_stops_at_an_answer_other_than_409() {
        let shared = Shared::new(Scenario::Sellout, 2, vec![1, 2, 3]);
        let calls = drive(&shared, |_| (429, String::new()));
        assert_eq!(calls.len(), 2, "one try per user");
        assert_eq!(shared.left(), 3, "a 429 says nothing about the seat");
    }

    #[test]
    fn a_mixed_user_browses_holds_and_settles() {
        let shared = Shared::new(Scenario::Mixed, 5, vec![1, 2, 3]);
        let mut rng = fastrand::Rng::with_seed(3);
        let mut settled = std::collections::HashMap::new();
        for _ in 0..200 {
            let mut journey = shared.next_journey(&mut rng).unwrap();
            let mut calls = Vec::new();
            while let Some(call) = journey.next_call(&shared, &mut rng) {
                let (status, body) = match &call {
                    Call::Event => (200, "{}".to_string()),
                    Call::Seats { .. } => (200, r#"{"seats":[{"id":2},{"id":3}]}"#.into()),
                    Call::Hold { .. } => (201, r#"{"bookingId":"b-1"}"#.into()),
                    _ => (200, "{}".into()),
                };
                journey.observe(&call, Some(status), body.as_bytes(), &shared, &mut rng);
                calls.push(call);
            }
            assert!(matches!(calls[0], Call::Event));
            assert!(matches!(calls[1], Call::Seats { .. }));
            assert!(matches!(calls[2], Call::Hold { seat: 2 | 3, .. }));
            let kind = match calls.get(3) {
                Some(Call::Confirm { booking, .. }) if booking == "b-1" => "confirm",
                Some(Call::Cancel { booking, .. }) if booking == "b-1" => "cancel",
                None => "leave",
                other => panic!("{other:?}"),
            };
            *settled.entry(kind).or_insert(0) += 1;
        }
        // 50/30/20, give or take.
        assert!((70..=130).contains(&settled["confirm"]), "{settled:?}");
        assert!((35..=85).contains(&settled["cancel"]), "{settled:?}");
        assert!((15..=65).contains(&settled["leave"]), "{settled:?}");
    }

    #[test]
    fn a_mixed_user_stops_when_a_step_fails() {
        let shared = Shared::new(Scenario::Mixed, 5, vec![1]);
        let mut rng = fastrand::Rng::with_seed(3);
        let mut journey = shared.next_journey(&mut rng).unwrap();
        let call = journey.next_call(&shared, &mut rng).unwrap();
        journey.observe(&call, None, b"", &shared, &mut rng);
        assert_eq!(journey.next_call(&shared, &mut rng), None);

        let mut journey = Journey::PickSeat { user: 0 };
        let call = journey.next_call(&shared, &mut rng).unwrap();
        journey.observe(&call, Some(200), br#"{"seats":[]}"#, &shared, &mut rng);
        assert_eq!(
            journey.next_call(&shared, &mut rng),
            None,
            "nothing left to hold"
        );
    }
}

//! Migrations, seed data and the constraints that guard the guarantees in PostgreSQL.

use herdgate::{
    migrate,
    seed::{self, SeedOptions},
};

use crate::helpers::{DEMO_SEATS, Isolation, USERS};

async fn counts(client: &tokio_postgres::Client) -> (i64, i64, i64) {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM seats),
                    (SELECT count(*) FROM users)",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn migrations_apply_once_and_running_them_again_changes_nothing() {
    let iso = Isolation::new().await;
    let applied = migrate::run(&iso.database_url.parse().unwrap())
        .await
        .unwrap();
    assert!(applied.is_empty(), "{applied:?}");
    let history: i64 = iso
        .pg()
        .await
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .unwrap()
        .get(0);
    let files = std::fs::read_dir("migrations").unwrap().count() as i64;
    assert_eq!(history, files);
}

#[tokio::test]
async fn seeding_twice_leaves_the_same_data() {
    let iso = Isolation::new().await;
    let client = iso.pg().await;
    let before = counts(&client).await;
    let options = SeedOptions {
        demo_seats: DEMO_SEATS,
        users: USERS,
    };
    seed::run(&client, options).await.unwrap();
    assert_eq!(counts(&client).await, before);
    // demo event + 4 others; the demo user + load-test users
    assert_eq!(before.0, 5);
    let rooms: i64 = client
        .query_one("SELECT count(*) FROM waiting_rooms", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rooms, 1, "event 5's demo room, once");
    assert_eq!(before.2, 1 + USERS as i64);
}

#[tokio::test]
async fn the_demo_venue_has_sections_rows_and_numbered_seats() {
    let iso = Isolation::new().await;
    let client = iso.pg().await;
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT section), count(DISTINCT (section, row_label)),
                    min(number), max(number),
                    count(*) FILTER (WHERE status = 'AVAILABLE')
               FROM seats WHERE event_id = 1",
            &[],
        )
        .await
        .unwrap();
    let (seats, sections, rows): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(seats, DEMO_SEATS as i64);
    // 300 seats fill 12 sections of one 25-seat row; 50,000 give 20 sections of 100 rows.
    assert_eq!((sections, rows), (12, 12));
    assert_eq!((row.get::<_, i32>(3), row.get::<_, i32>(4)), (1, 25));
    assert_eq!(row.get::<_, i64>(5), seats);
    let duplicates: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT 1 FROM seats GROUP BY event_id, section, row_label, number
                                   HAVING count(*) > 1) d",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(duplicates, 0);
}

const BOOK: &str =
    "INSERT INTO bookings (id, event_id, seat_id, user_id, status, expires_at, confirmed_at, seq)
                    VALUES (gen_random_uuid(), $1, $2, 1, $3, now() + interval '10 minutes',
                            CASE WHEN $3 = 'CONFIRMED' THEN now() END, 1)";

async fn book(
    client: &tokio_postgres::Client,
    event: i64,
    seat: i64,
    status: &str,
) -> Result<u64, String> {
    client
        .execute(BOOK, &[&event, &seat, &status])
        .await
        .map_err(|e| {
            e.as_db_error()
                .map(|d| d.constraint().unwrap_or("").to_string())
                .unwrap_or_default()
        })
}

#[tokio::test]
async fn the_database_refuses_a_second_live_booking_for_a_seat() {
    let iso = Isolation::new().await;
    let client = iso.pg().await;
    assert_eq!(book(&client, 1, 1, "PENDING").await, Ok(1));
    assert_eq!(
        book(&client, 1, 1, "CONFIRMED").await,
        Err("bookings_one_live_per_seat".to_string())
    );
    assert_eq!(
        book(&client, 1, 1, "PENDING").await,
        Err("bookings_one_live_per_seat".to_string())
    );
    // Ended bookings do not count.
    assert_eq!(book(&client, 1, 1, "EXPIRED").await, Ok(1));
    assert_eq!(book(&client, 1, 1, "CANCELLED").await, Ok(1));
}

#[tokio::test]
async fn a_booking_must_have_a_known_status() {
    let iso = Isolation::new().await;
    let client = iso.pg().await;
    assert_eq!(
        book(&client, 1, 1, "SOLD").await,
        Err("bookings_status_check".to_string())
    );
    let bad_seat_status = client
        .execute("UPDATE seats SET status = 'GONE' WHERE id = 1", &[])
        .await;
    assert!(bad_seat_status.is_err());
}

/// The writer checks a booking's user and seat per batch (tests/it/writer.rs);
/// the database keeps them from being deleted under the booking.
#[tokio::test]
async fn a_user_or_seat_that_bookings_reference_cannot_be_deleted() {
    let iso = Isolation::new().await;
    let client = iso.pg().await;
    assert_eq!(book(&client, 1, 1, "EXPIRED").await, Ok(1));
    for (what, delete) in [
        ("user 1", "DELETE FROM users WHERE id = 1"),
        ("seat 1", "DELETE FROM seats WHERE event_id = 1 AND id <= 2"),
    ] {
        let refused = client.execute(delete, &[]).await.unwrap_err();
        let db = refused.as_db_error().expect("a database error");
        assert_eq!(db.code().code(), "23503", "{what}: {db:?}");
        assert!(db.message().starts_with(what), "{what}: {}", db.message());
    }
    // Unreferenced ones go.
    assert_eq!(
        client
            .execute("DELETE FROM seats WHERE id = 2", &[])
            .await
            .unwrap(),
        1
    );
    let user = client
        .query_one(
            "INSERT INTO users (email, name, password_hash) VALUES ('gone@example.com', 'x', 'x')
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(
        client
            .execute("DELETE FROM users WHERE id = $1", &[&user])
            .await
            .unwrap(),
        1
    );
}

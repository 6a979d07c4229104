//! The operator API of the waiting room: `GET` and `PATCH
//! /waiting-room/:id/settings` behind the operator's bearer secret. A change
//! takes effect at once (no sync needed), reaches PostgreSQL, nobody loses a
//! place, and no sync that read the row before it can undo it.

use std::time::Duration;

use herdgate::{
    config,
    holds::{RoomWrite, RoomWritten, Store},
};
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, assert_problem, json},
    waiting_room::{EVENT, Room, app_with_room_and, place, place_after_join, visit},
};

const OPERATOR: &str = "operator-secret-for-the-tests-0123456789";

/// The app with event 3 behind a room, the operator API on, and a sync so
/// rare that only the operator API can have changed Redis during a test.
async fn app(room: Room, users: u32) -> (TestApp, Vec<i64>) {
    app_with_room_and(
        room,
        users,
        [
            (config::ENV_OPERATOR_TOKEN.into(), OPERATOR.into()),
            (config::ENV_INVENTORY_INTERVAL.into(), "1h".into()),
        ],
    )
    .await
}

async fn settings(app: &TestApp, token: Option<&str>, body: Option<&str>) -> reqwest::Response {
    let url = format!("{}/waiting-room/{EVENT}/settings", app.base);
    let mut request = match body {
        Some(body) => app
            .http
            .patch(url)
            .header("content-type", "application/json")
            .body(body.to_string()),
        None => app.http.get(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn change(app: &TestApp, body: Value) -> Value {
    json(
        settings(app, Some(OPERATOR), Some(&body.to_string())).await,
        200,
    )
    .await
}

async fn stats(app: &TestApp) -> Value {
    json(app.get(&format!("/waiting-room/{EVENT}/stats")).await, 200).await
}

async fn row(app: &TestApp) -> (f64, i32, bool, i64) {
    let row = app
        .iso
        .pg()
        .await
        .query_one(
            "SELECT admit_per_sec, max_active, paused, version FROM waiting_rooms
              WHERE event_id = $1",
            &[&EVENT],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

#[tokio::test]
async fn an_operator_pauses_slows_and_resumes_a_room_at_once_and_nobody_loses_a_place() {
    let (app, users) = app(Room::default(), 0).await;
    let before = json(settings(&app, Some(OPERATOR), None).await, 200).await;
    assert_eq!(before["paused"], false);
    assert_eq!(before["live"], true, "{before}");

    let paused = change(&app, json!({"paused": true})).await;
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["live"], true);
    assert!(paused["version"].as_i64() > before["version"].as_i64());
    // At once: the sync runs once an hour here.
    assert_eq!(stats(&app).await["paused"], true);
    let buyers = &users[..6];
    for (i, &user) in buyers.iter().enumerate() {
        assert_eq!(place_after_join(&app, user).await, i as u64 + 1);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, &user) in buyers.iter().enumerate() {
        let view = place(&app, user).await;
        assert_eq!(view["status"], "queued", "paused: nobody is admitted");
        assert_eq!(view["position"].as_u64(), Some(i as u64 + 1));
        assert_eq!(view["paused"], true, "the buyer is told");
        assert!(view["estimatedWaitSeconds"].is_null(), "no guess: {view}");
    }

    // Slower, and at most two buyers in at a time: still paused, nobody moves.
    let slowed = change(&app, json!({"admissionRate": 4, "maxActive": 2})).await;
    assert_eq!(
        (
            slowed["admissionRate"].as_f64(),
            slowed["maxActive"].as_u64()
        ),
        (Some(4.0), Some(2))
    );
    assert_eq!(slowed["paused"], true, "what was not named is kept");
    assert_eq!(
        row(&app).await.0,
        4.0,
        "PostgreSQL has it for the next sync"
    );
    assert_eq!(place(&app, buyers[0]).await["status"], "queued");

    let resumed = change(&app, json!({"paused": false})).await;
    assert_eq!(resumed["paused"], false);
    let view = place(&app, buyers[5]).await;
    assert!(view["paused"].is_null(), "said only while paused: {view}");
    // Resumed in order, and never more than two admissions live.
    let mut admitted: Vec<i64> = Vec::new();
    for _ in 0..100 {
        for &user in buyers {
            if place(&app, user).await["status"] == "admitted" && !admitted.contains(&user) {
                admitted.push(user);
            }
        }
        if admitted.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(admitted, buyers[..2], "the first two, in queue order");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(stats(&app).await["active"], 2, "maxActive holds");
    for (i, &user) in buyers[2..].iter().enumerate() {
        assert_eq!(
            place(&app, user).await["position"].as_u64(),
            Some(i as u64 + 1)
        );
    }
    // More room: the rest come in, in order.
    change(&app, json!({"maxActive": 100})).await;
    let mut order = Vec::new();
    for _ in 0..100 {
        for &user in &buyers[2..] {
            if !order.contains(&user) && place(&app, user).await["status"] == "admitted" {
                order.push(user);
            }
        }
        if order.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(order.len(), 4, "{order:?}");
    let stats = stats(&app).await;
    assert_eq!(stats["outOfOrder"], 0, "{stats}");
    assert_eq!(stats["admitted"], 6);
    let (rate, max_active, paused, version) = row(&app).await;
    assert_eq!((rate, max_active, paused), (4.0, 100, false));
    let now = json(settings(&app, Some(OPERATOR), None).await, 200).await;
    assert_eq!(now["version"].as_i64(), Some(version));
    assert_eq!(now["live"], true);
}

#[tokio::test]
async fn a_sync_holding_settings_read_before_an_operator_change_cannot_undo_it() {
    let (app, _) = app(Room::default(), 0).await;
    let pg = app.iso.pg().await;
    // What a sync read just before the change.
    let rooms = herdgate::waiting_room::settings::all(&pg).await.unwrap();
    let before = rooms[&EVENT].clone();
    change(&app, json!({"paused": true})).await;
    let store = Store::connect(&app.config.redis).await.unwrap();
    assert_eq!(
        store
            .set_room(EVENT, &before, RoomWrite::Load)
            .await
            .unwrap(),
        RoomWritten::Stale
    );
    assert_eq!(stats(&app).await["paused"], true);
    // A change of a room Redis does not have leaves it so (the event stays unloaded).
    assert_eq!(
        store.set_room(2, &before, RoomWrite::Change).await.unwrap(),
        RoomWritten::NoRoom
    );
    assert_problem(app.get("/waiting-room/2/stats").await, 404).await;
    // A change made by hand in SQL gets a newer version too, and the sync applies it.
    pg.execute(
        "UPDATE waiting_rooms SET paused = false WHERE event_id = $1",
        &[&EVENT],
    )
    .await
    .unwrap();
    let after = herdgate::waiting_room::settings::all(&pg).await.unwrap()[&EVENT].clone();
    assert!(after.version > before.version);
    assert_eq!(
        store
            .set_room(EVENT, &after, RoomWrite::Load)
            .await
            .unwrap(),
        RoomWritten::Set
    );
    assert_eq!(stats(&app).await["paused"], false);
}

#[tokio::test]
async fn operator_calls_need_the_operator_secret_and_bad_changes_are_400_and_change_nothing() {
    let (app, users) = app(Room::default(), 0).await;
    let unchanged = row(&app).await;
    let user_token = app.token(users[0]);
    let forged = format!("{OPERATOR}x");
    let almost = &OPERATOR[..OPERATOR.len() - 1];
    for token in [None, Some(user_token.as_str()), Some(&forged), Some(almost)] {
        for body in [None, Some(r#"{"paused":true}"#)] {
            let response = settings(&app, token, body).await;
            assert!(response.headers().contains_key("www-authenticate"));
            let problem = assert_problem(response, 401).await;
            assert_eq!(problem["type"], "/problems/bad-operator-token", "{token:?}");
        }
    }
    // The operator's secret is no buyer's token either.
    assert_problem(visit_as(&app, OPERATOR).await, 401).await;

    for body in [
        "",
        "{",
        "[]",
        r#"{"paused":"true"}"#,
        r#"{"paused":null}"#,
        r#"{"admissionRate":0}"#,
        r#"{"admissionRate":-3}"#,
        r#"{"admissionRate":100001}"#,
        r#"{"admissionRate":"fast"}"#,
        r#"{"maxActive":0}"#,
        r#"{"maxActive":2.5}"#,
        r#"{"maxActive":2147483648}"#,
        r#"{"rate":5}"#,
        r#"{}"#,
    ] {
        let problem = assert_problem(settings(&app, Some(OPERATOR), Some(body)).await, 400).await;
        assert_eq!(problem["type"], "/problems/invalid-body", "{body}");
    }
    let no_json = app
        .http
        .patch(format!("{}/waiting-room/{EVENT}/settings", app.base))
        .bearer_auth(OPERATOR)
        .body(r#"{"paused":true}"#)
        .send()
        .await
        .unwrap();
    assert_problem(no_json, 415).await;
    assert_eq!(row(&app).await, unchanged, "nothing changed");

    // No room: an event without one, an unknown event; a bad id.
    for event in ["2", "99"] {
        for body in [None, Some(r#"{"paused":true}"#)] {
            let url = format!("{}/waiting-room/{event}/settings", app.base);
            let request = match body {
                Some(body) => app
                    .http
                    .patch(url)
                    .header("content-type", "application/json")
                    .body(body),
                None => app.http.get(url),
            };
            let response = request.bearer_auth(OPERATOR).send().await.unwrap();
            assert_problem(response, 404).await;
        }
    }
    let bad_id = app
        .http
        .get(format!("{}/waiting-room/x/settings", app.base))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_problem(bad_id, 400).await;
    let wrong_method = app
        .http
        .post(format!("{}/waiting-room/{EVENT}/settings", app.base))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.headers()["allow"], "GET, HEAD, PATCH");
    assert_problem(wrong_method, 405).await;
    app.assert_healthy().await;
}

async fn visit_as(app: &TestApp, token: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/waiting-room/{EVENT}/join", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn without_an_operator_secret_the_operator_api_is_off() {
    let (app, users) = app_with_room_and(Room::default(), 0, []).await;
    assert!(app.config.auth.operator_token.is_none());
    for token in [None, Some(OPERATOR)] {
        for body in [None, Some(r#"{"paused":true}"#)] {
            let problem = assert_problem(settings(&app, token, body).await, 403).await;
            assert_eq!(problem["type"], "/problems/operator-api-off");
        }
    }
    assert!(!row(&app).await.2);
    // The room itself works as ever.
    assert_eq!(visit(&app, users[0], true).await.status(), 200);
}

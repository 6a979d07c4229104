//! `GET /openapi.json` is the file in the repository, and every operation it
//! documents is served by the real gateway (never 404 or 405).

use serde_json::Value;

use crate::helpers::{Isolation, add_waiting_room, json, spawn_app_on};

#[tokio::test]
async fn every_documented_operation_is_served() {
    // Event 3, the spec's example for waiting-room paths, has a room.
    let iso = Isolation::new().await;
    add_waiting_room(&iso.pg().await, 3).await;
    let app = spawn_app_on(iso, |_| {}).await;
    let doc = json(app.get("/openapi.json").await, 200).await;
    let file: Value = serde_json::from_str(herdgate::http::router::OPENAPI).unwrap();
    assert_eq!(doc, file);
    let mut operations = 0;
    for (pattern, ops) in doc["paths"].as_object().unwrap() {
        let id = if pattern.starts_with("/api/bookings/") {
            uuid::Uuid::now_v7().to_string()
        } else if pattern.starts_with("/waiting-room/") {
            "3".to_string()
        } else {
            "1".to_string()
        };
        let path = pattern.replace("{id}", &id);
        let query = if path == "/api/seats/available" {
            "?eventId=1"
        } else {
            ""
        };
        for method in ops.as_object().unwrap().keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let status = app
                .http
                .request(method.clone(), format!("{}{path}{query}", app.base))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            let documented: Vec<&String> = ops[method.as_str().to_lowercase()]["responses"]
                .as_object()
                .unwrap()
                .keys()
                .collect();
            assert!(
                documented.contains(&&status.to_string()),
                "{method} {path}: {status} is not among {documented:?}"
            );
            assert!(status != 404 && status != 405, "{method} {path}: {status}");
            operations += 1;
        }
    }
    assert!(operations >= 20, "{operations}");
}

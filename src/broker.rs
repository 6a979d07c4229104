//! RabbitMQ connection, opened on demand and reopened after it drops.
//!
//! For now only readiness uses it; the relay and the writer will share it.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

pub struct Broker {
    url: SecretString,
    connection: Mutex<Option<Connection>>,
}

impl Broker {
    pub fn new(url: SecretString) -> Self {
        Broker {
            url,
            connection: Mutex::new(None),
        }
    }

    /// Ok when a connection to RabbitMQ is open, connecting first if needed.
    pub async fn check(&self, timeout: Duration) -> Result<(), String> {
        let mut connection = self.connection.lock().await;
        if connection.as_ref().is_some_and(|c| c.status().connected()) {
            return Ok(());
        }
        let connect =
            Connection::connect(self.url.expose_secret(), ConnectionProperties::default());
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(c)) => {
                *connection = Some(c);
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }
}

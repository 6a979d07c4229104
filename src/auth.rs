//! Who is asking: argon2 password checks at login, and HS256 bearer tokens.
//!
//! Tokens carry only the user id (`sub`) and an expiry, signed with
//! HERDGATE_TOKEN_SECRET, so any gateway verifies them without a database call.
//! Anyone with the secret can mint one (`herdgate token --user ID`), which is how
//! load tests get 200,000 users without 200,000 logins.

use std::time::Duration;

use anyhow::Context;
use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::config::{AuthConfig, Config};

const ISSUER: &str = "herdgate";
/// A login waits this long for a free password-check slot before it gets 503.
const LOGIN_QUEUE_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    iat: i64,
    exp: i64,
}

/// A signed token and what it stands for.
#[derive(Debug, Clone)]
pub struct Token {
    pub token: String,
    pub user_id: i64,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("email or password is wrong")]
    BadCredentials,
    #[error("the bearer token is missing, malformed, expired or not ours")]
    BadToken,
    #[error("the token's user does not exist; log in again")]
    UnknownUser,
    #[error("too many logins at once")]
    Busy,
    #[error("the user store is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: chrono::Duration,
    /// Bounds concurrent argon2 work, which is slow on purpose.
    login_slots: Semaphore,
    /// Checked against when the email is unknown, so both cases take as long.
    dummy_hash: String,
}

impl Auth {
    pub fn new(config: &AuthConfig) -> anyhow::Result<Self> {
        let secret = config.token_secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        // A token that says it is not valid yet is refused (jsonwebtoken skips `nbf` unless told).
        validation.validate_nbf = true;
        validation.leeway = 5;
        Ok(Auth {
            encoding: EncodingKey::from_secret(secret).context("bad token secret")?,
            decoding: DecodingKey::from_secret(secret).context("bad token secret")?,
            validation,
            ttl: chrono::Duration::from_std(config.token_ttl).context("token TTL too long")?,
            login_slots: Semaphore::new(config.login_concurrency),
            dummy_hash: hash_password("not a real password")?,
        })
    }

    /// Signs a token for `user_id`, valid for the configured TTL.
    pub fn issue(&self, user_id: i64) -> anyhow::Result<Token> {
        let now = Utc::now();
        let expires_at = now + self.ttl;
        let claims = Claims {
            sub: user_id.to_string(),
            iss: ISSUER.to_string(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .context("failed to sign token")?;
        Ok(Token {
            token,
            user_id,
            expires_at,
        })
    }

    /// The user id a bearer token stands for.
    pub fn verify(&self, token: &str) -> Result<i64, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| AuthError::BadToken)?;
        data.claims
            .sub
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or(AuthError::BadToken)
    }

    /// Checks an email and password against PostgreSQL and issues a token.
    #[tracing::instrument(skip_all)]
    pub async fn login(
        &self,
        pg: &deadpool_postgres::Pool,
        email: &str,
        password: &str,
    ) -> Result<Token, AuthError> {
        let client = pg
            .get()
            .await
            .context("failed to get a PostgreSQL connection")?;
        let row = client
            .query_opt(
                "SELECT id, password_hash FROM users WHERE email = lower($1)",
                &[&email.trim()],
            )
            .await
            .context("failed to look up user")?;
        drop(client);
        let (user_id, hash) = match &row {
            Some(row) => (Some(row.get::<_, i64>(0)), row.get::<_, String>(1)),
            None => (None, self.dummy_hash.clone()),
        };
        let _slot = tokio::time::timeout(LOGIN_QUEUE_WAIT, self.login_slots.acquire())
            .await
            .map_err(|_| AuthError::Busy)?
            .expect("login semaphore is never closed");
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .context("password check panicked")?;
        match user_id {
            Some(user_id) if matches => Ok(self.issue(user_id)?),
            _ => Err(AuthError::BadCredentials),
        }
    }
}

/// An argon2id PHC string with a fresh salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("failed to hash password: {e}"))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// `herdgate token --user ID [--count N]`: prints a token per existing user,
/// one per line and nothing else, for scripts and load tests.
pub async fn print_tokens(config: &Config, first: i64, count: u32) -> anyhow::Result<()> {
    let pg = config.pg.pool()?;
    let client = pg.get().await.context("failed to connect to PostgreSQL")?;
    let last = first + i64::from(count) - 1;
    let found: i64 = client
        .query_one(
            "SELECT count(*) FROM users WHERE id BETWEEN $1 AND $2",
            &[&first, &last],
        )
        .await
        .context("failed to look up users")?
        .get(0);
    anyhow::ensure!(
        found == i64::from(count),
        "users {first}..={last}: only {found} of {count} exist"
    );
    let auth = Auth::new(&config.auth)?;
    let mut out = String::with_capacity(count as usize * 180);
    for user_id in first..=last {
        out.push_str(&auth.issue(user_id)?.token);
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn auth(secret: &'static str) -> Auth {
        let env: HashMap<&str, &str> = [(crate::config::ENV_TOKEN_SECRET, secret)].into();
        Auth::new(&Config::from_env(&env).unwrap().auth).unwrap()
    }

    #[test]
    fn a_token_verifies_to_its_user() {
        let auth = auth("0123456789abcdef0123456789abcdef");
        let token = auth.issue(42).unwrap();
        assert_eq!(auth.verify(&token.token).unwrap(), 42);
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let token = auth("0123456789abcdef0123456789abcdef").issue(42).unwrap();
        let other = auth("fedcba9876543210fedcba9876543210");
        assert!(matches!(
            other.verify(&token.token),
            Err(AuthError::BadToken)
        ));
        assert!(matches!(
            other.verify("not.a.jwt"),
            Err(AuthError::BadToken)
        ));
    }

    #[test]
    fn passwords_verify_against_their_hash_only() {
        let hash = hash_password("password").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("password", &hash));
        assert!(!verify_password("Password", &hash));
        assert!(!verify_password("password", "not a phc string"));
    }
}

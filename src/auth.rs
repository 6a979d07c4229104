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

/// The longest email accepted at login, in characters (as `openapi.json` counts).
pub const MAX_EMAIL: usize = 254;
/// The longest password accepted at login, in characters.
pub const MAX_PASSWORD: usize = 1024;

/// The body of `POST /api/users/login`.
#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

impl LoginRequest {
    /// Why these credentials are not worth a database query and a password
    /// check, or `None`. PostgreSQL refuses text with NUL in it (SQLSTATE
    /// 22021): that is said here, before asking it.
    pub fn invalid(&self) -> Option<&'static str> {
        let email = &self.email;
        if email.chars().count() > MAX_EMAIL
            || !email.contains('@')
            || email.chars().any(char::is_control)
        {
            return Some(
                "email must be an email address of at most 254 characters, without control characters",
            );
        }
        let password = &self.password;
        if password.is_empty() || password.chars().count() > MAX_PASSWORD || password.contains('\0')
        {
            return Some("password must be 1 to 1024 characters, without NUL");
        }
        None
    }

    /// The account the per-account login limit counts against.
    pub fn account(&self) -> String {
        self.email.trim().to_lowercase()
    }
}

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
    /// The user lookup failed: PostgreSQL went away mid-query, or worse.
    #[error("failed to look up user: {0}")]
    Query(tokio_postgres::Error),
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
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let row = client
            .query_opt(
                "SELECT id, password_hash FROM users WHERE email = lower($1)",
                &[&email.trim()],
            )
            .await
            .map_err(AuthError::Query)?;
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

    use proptest::prelude::*;

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

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    /// One for every case: building one hashes a password, slow on purpose.
    static AUTH: std::sync::LazyLock<Auth> = std::sync::LazyLock::new(|| auth(SECRET));

    /// One edit of a token's text.
    #[derive(Debug, Clone)]
    enum Mutation {
        Replace(usize, u8),
        Delete(usize),
        Insert(usize, u8),
        Truncate(usize),
        SwapSegments(usize, usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        // The base64url alphabet, the separator and a few bytes outside it.
        let byte = prop_oneof![
            proptest::sample::select(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec()
            ),
            proptest::sample::select(b". =+/%\0".to_vec()),
        ];
        prop_oneof![
            (any::<usize>(), byte.clone()).prop_map(|(i, b)| Mutation::Replace(i, b)),
            any::<usize>().prop_map(Mutation::Delete),
            (any::<usize>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<usize>().prop_map(Mutation::Truncate),
            (0..3usize, 0..3usize).prop_map(|(a, b)| Mutation::SwapSegments(a, b)),
        ]
    }

    fn mutate(token: &str, m: &Mutation) -> String {
        let mut bytes = token.as_bytes().to_vec();
        let at = |i: usize, len: usize| i % len.max(1);
        match *m {
            Mutation::Replace(..) | Mutation::Delete(_) if bytes.is_empty() => {}
            Mutation::Replace(i, b) => {
                let i = at(i, bytes.len());
                bytes[i] = b;
            }
            Mutation::Delete(i) => {
                bytes.remove(at(i, bytes.len()));
            }
            Mutation::Insert(i, b) => bytes.insert(at(i, bytes.len() + 1), b),
            Mutation::Truncate(i) => bytes.truncate(at(i, bytes.len())),
            Mutation::SwapSegments(a, b) => {
                let mut parts: Vec<&str> = token.split('.').collect();
                let n = parts.len();
                parts.swap(a % n, b % n);
                return parts.join(".");
            }
        }
        String::from_utf8(bytes).expect("ascii in, ascii out")
    }

    /// Claims as anyone holding the secret could sign them, and whether our
    /// rules accept them: the oracle, written apart from `verify`.
    fn claims() -> impl Strategy<Value = (serde_json::Value, Option<i64>)> {
        let sub = prop_oneof![
            (1..=i64::MAX).prop_map(|n| n.to_string()),
            (i64::MIN..=0).prop_map(|n| n.to_string()),
            any::<String>(),
            "[+-]?0*[0-9]{1,20}",
        ];
        // Offsets from now, in seconds, far from the 5 s leeway.
        let offset = prop_oneof![-1_000_000i64..-10, 10..1_000_000i64];
        (
            sub,
            prop_oneof![Just("herdgate".to_string()), "[a-z]{0,9}"],
            offset.clone(),
            proptest::option::of(offset),
            any::<[bool; 3]>(),
        )
            .prop_map(|(sub, iss, exp, nbf, [has_sub, has_iss, has_exp])| {
                let now = Utc::now().timestamp();
                let mut claims = serde_json::Map::new();
                claims.insert("iat".into(), now.into());
                if has_sub {
                    claims.insert("sub".into(), sub.clone().into());
                }
                if has_iss {
                    claims.insert("iss".into(), iss.clone().into());
                }
                if has_exp {
                    claims.insert("exp".into(), (now + exp).into());
                }
                if let Some(nbf) = nbf {
                    claims.insert("nbf".into(), (now + nbf).into());
                }
                let valid = has_sub
                    && has_iss
                    && iss == "herdgate"
                    && has_exp
                    && exp > 0
                    && nbf.is_none_or(|nbf| nbf < 0);
                let user = sub.parse::<i64>().ok().filter(|n| *n > 0 && valid);
                (serde_json::Value::Object(claims), user)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any text at all, or anything shaped like a JWT, is refused without a panic.
        #[test]
        fn arbitrary_strings_never_verify(
            text in prop_oneof![
                any::<String>(),
                "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,43}",
                "eyJ[A-Za-z0-9_-]{0,40}\\.eyJ[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{43}",
            ]
        ) {
            let auth = &*AUTH;
            prop_assert!(matches!(auth.verify(&text), Err(AuthError::BadToken)));
        }

        /// A valid token changed in any way no longer verifies.
        #[test]
        fn a_mutated_token_never_verifies(
            user in 1..=i64::MAX,
            mutations in proptest::collection::vec(mutation(), 1..4),
        ) {
            let auth = &*AUTH;
            let token = auth.issue(user).unwrap().token;
            let mutated = mutations.iter().fold(token.clone(), |t, m| mutate(&t, m));
            prop_assume!(mutated != token);
            let got = auth.verify(&mutated);
            prop_assert!(
                matches!(got, Err(AuthError::BadToken)),
                "{mutated} verified as {got:?}"
            );
        }

        /// Every token we issue verifies to its user, and to no other.
        #[test]
        fn issued_tokens_round_trip(user in 1..=i64::MAX) {
            let auth = &*AUTH;
            prop_assert_eq!(auth.verify(&auth.issue(user).unwrap().token).unwrap(), user);
        }

        /// A token signed with our secret verifies exactly when its claims are
        /// ours, current and name a positive user id; then to that id.
        #[test]
        fn signed_claims_verify_only_when_valid((claims, user) in claims()) {
            let auth = &*AUTH;
            let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
            let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
            match (auth.verify(&token), user) {
                (Ok(got), Some(want)) => prop_assert_eq!(got, want),
                (Err(AuthError::BadToken), None) => {}
                (got, want) => prop_assert!(false, "{claims}: got {got:?}, want {want:?}"),
            }
        }

        /// Login bodies pass the check exactly when `openapi.json` says they do
        /// (the oracle below spells out its schema), and those that pass are
        /// safe to ask PostgreSQL about: no NUL, no control characters.
        #[test]
        fn login_bodies_pass_exactly_as_documented(
            email in prop_oneof![
                any::<String>(),
                "[a-z]{0,8}@[a-zé]{0,8}(\\x00|\\x7f|\\u{85}|\\t)?",
                "[a-zé]{248,258}@x",
            ],
            password in prop_oneof![any::<String>(), "[aé\\x00]{0,3}", "[aé]{1020,1030}"],
        ) {
            let request = LoginRequest { email, password };
            let cc = |c: char| ('\u{0}'..='\u{1f}').contains(&c) || ('\u{7f}'..='\u{9f}').contains(&c);
            let email = &request.email;
            let documented = (1..=254).contains(&email.chars().count())
                && email.contains('@')
                && !email.chars().any(cc)
                && (1..=1024).contains(&request.password.chars().count())
                && !request.password.contains('\0');
            prop_assert_eq!(request.invalid().is_none(), documented, "{:?}", request);
            if documented {
                prop_assert!(!request.account().contains('\0'));
            }
        }
    }

    #[test]
    fn the_login_limits_are_the_documented_ones() {
        let doc: serde_json::Value = serde_json::from_str(crate::http::router::OPENAPI).unwrap();
        let login = &doc["components"]["schemas"]["LoginRequest"]["properties"];
        assert_eq!(login["email"]["maxLength"], MAX_EMAIL);
        assert_eq!(login["password"]["maxLength"], MAX_PASSWORD);
        assert_eq!(login["password"]["minLength"], 1);
        let control = "[^\\u0000-\\u001f\\u007f-\\u009f]*";
        assert_eq!(login["email"]["pattern"], format!("^{control}@{control}$"));
        assert_eq!(login["password"]["pattern"], "^[^\\u0000]*$");
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

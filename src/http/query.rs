//! Query strings and path ids: a client's bytes to numbers, or a 400 saying
//! which parameter is wrong and why.

use crate::catalog::{DEFAULT_PAGE, MAX_PAGE};

use super::problem::Problem;

/// The query string's pairs, percent-decoded; the first of a repeated name counts.
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `name` as a positive integer, if present.
    pub fn positive(&self, name: &str) -> Result<Option<i64>, Problem> {
        self.get(name).map(|v| parse_id(name, v)).transpose()
    }

    /// `name` as an integer of 0 or more, if present.
    pub fn non_negative(&self, name: &str) -> Result<Option<i64>, Problem> {
        self.get(name)
            .map(|v| match v.parse::<i64>() {
                Ok(n) if n >= 0 => Ok(n),
                _ => Err(Problem::bad_request(format!(
                    "{name} must be a non-negative integer, not {v:?}"
                ))),
            })
            .transpose()
    }
}

/// `GET /api/seats/available?eventId=&limit=&after=`: which page of which event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatsQuery {
    pub event_id: i64,
    /// Seats with a higher id than this (0: from the start).
    pub after: i64,
    /// 1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] when not given.
    pub limit: u32,
}

impl SeatsQuery {
    pub fn parse(query: Option<&str>) -> Result<Self, Problem> {
        let query = Query::parse(query);
        let event_id = query
            .positive("eventId")?
            .ok_or_else(|| Problem::bad_request("the query parameter eventId is required"))?;
        let limit = match query.positive("limit")? {
            None => DEFAULT_PAGE,
            Some(n) if n <= i64::from(MAX_PAGE) => n as u32,
            Some(_) => {
                return Err(Problem::bad_request(format!(
                    "limit must be at most {MAX_PAGE}"
                )));
            }
        };
        let after = query.non_negative("after")?.unwrap_or(0);
        Ok(SeatsQuery {
            event_id,
            after,
            limit,
        })
    }
}

/// A path or query id: a positive integer.
pub fn parse_id(name: &str, value: &str) -> Result<i64, Problem> {
    match value.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Problem::bad_request(format!(
            "{name} must be a positive integer, not {value:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn query_parameters_are_checked() {
        let q = Query::parse(Some("eventId=7&after=0&limit=x"));
        assert_eq!(q.positive("eventId").unwrap(), Some(7));
        assert_eq!(q.non_negative("after").unwrap(), Some(0));
        assert!(q.positive("limit").is_err());
        assert_eq!(q.positive("missing").unwrap(), None);
    }

    /// A value as a client may send it: a number, a near-number, or anything.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            (0..=u64::from(MAX_PAGE) + 2).prop_map(|n| n.to_string()),
            "[+-]?[0-9]{0,25}",
            " ?[0-9]{1,4} ?",
            any::<String>(),
        ]
    }

    fn encode(pairs: &[(String, String)]) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    }

    /// The integer `value` spells (an optional sign, then digits, within i64):
    /// the oracle, written apart from the parser.
    fn integer(value: &str) -> Option<i64> {
        let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
        let plain = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        let n: i128 = digits.parse().ok().filter(|_| plain)?;
        i64::try_from(if value.starts_with('-') { -n } else { n }).ok()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any query string parses without panicking, and every error is a 400.
        #[test]
        fn any_query_string_is_a_page_or_a_400(query in any::<String>()) {
            match SeatsQuery::parse(Some(&query)) {
                Ok(q) => {
                    prop_assert!(q.event_id > 0 && q.after >= 0);
                    prop_assert!((1..=MAX_PAGE).contains(&q.limit));
                }
                Err(p) => prop_assert_eq!(p.status.as_u16(), 400),
            }
        }

        /// Encoded parameters decode to what was sent, and are accepted exactly
        /// when they are integers in their ranges; the first of a repeated name counts.
        #[test]
        fn seat_page_parameters_round_trip(
            event in value(),
            limit in proptest::option::of(value()),
            after in proptest::option::of(value()),
            repeated in value(),
        ) {
            let mut pairs = vec![("eventId".to_string(), event.clone())];
            pairs.extend(limit.clone().map(|v| ("limit".to_string(), v)));
            pairs.extend(after.clone().map(|v| ("after".to_string(), v)));
            pairs.push(("eventId".to_string(), repeated));
            let got = SeatsQuery::parse(Some(&encode(&pairs)));
            let event_id = integer(&event).filter(|n| *n > 0);
            let limit = match &limit {
                None => Some(DEFAULT_PAGE),
                Some(v) => integer(v)
                    .filter(|n| (1..=i64::from(MAX_PAGE)).contains(n))
                    .map(|n| n as u32),
            };
            let after = match &after {
                None => Some(0),
                Some(v) => integer(v).filter(|n| *n >= 0),
            };
            let want = match (event_id, limit, after) {
                (Some(event_id), Some(limit), Some(after)) => Some(SeatsQuery { event_id, after, limit }),
                _ => None,
            };
            match got {
                Ok(q) => prop_assert_eq!(Some(q), want),
                Err(p) => {
                    prop_assert_eq!(want, None);
                    prop_assert_eq!(p.status.as_u16(), 400);
                }
            }
        }

        /// Every positive id reads back as itself, in a path or a query.
        #[test]
        fn positive_ids_round_trip(n in 1..=i64::MAX) {
            prop_assert_eq!(parse_id("id", &n.to_string()).unwrap(), n);
            let q = Query::parse(Some(&format!("eventId={n}")));
            prop_assert_eq!(q.positive("eventId").unwrap(), Some(n));
        }
    }
}

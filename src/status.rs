//! The statuses of bookings, seats and events: one enum each, spelled as
//! PostgreSQL's CHECK constraints (migrations/), the Lua scripts and the API
//! spell them. Text becomes one of these where it enters (a row, a Redis
//! reply, a message) and is compared nowhere else.

use std::{error::Error, fmt};

use bytes::BytesMut;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

/// Text that names no status of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} status {text:?}")]
pub struct UnknownStatus {
    pub kind: &'static str,
    pub text: String,
}

/// One status enum: its variants with their text, serde as that text, and
/// PostgreSQL `text` in and out.
macro_rules! status {
    ($(#[$doc:meta])* $name:ident ($kind:literal) { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub fn parse(text: &str) -> Result<Self, UnknownStatus> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownStatus { kind: $kind, text: text.to_string() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(text: &str) -> Result<Self, UnknownStatus> {
                $name::parse(text)
            }
        }

        impl<'a> FromSql<'a> for $name {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
                Ok($name::parse(<&str as FromSql>::from_sql(ty, raw)?)?)
            }

            fn accepts(ty: &Type) -> bool {
                <&str as FromSql>::accepts(ty)
            }
        }

        impl ToSql for $name {
            fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
                self.as_str().to_sql(ty, out)
            }

            fn accepts(ty: &Type) -> bool {
                <&str as ToSql>::accepts(ty)
            }

            to_sql_checked!();
        }
    };
}

status! {
    /// A booking's status: PostgreSQL's `bookings.status`, a hold's `status`
    /// field in Redis, a hold event's `status`.
    BookingStatus ("booking") {
        /// Held until its expiry, not yet paid.
        Pending = "PENDING",
        Confirmed = "CONFIRMED",
        Cancelled = "CANCELLED",
        Expired = "EXPIRED",
    }
}

impl BookingStatus {
    /// The hold event type that leads to this status.
    pub fn event_type(self) -> &'static str {
        match self {
            BookingStatus::Pending => "hold.placed",
            BookingStatus::Confirmed => "hold.confirmed",
            BookingStatus::Cancelled => "hold.cancelled",
            BookingStatus::Expired => "hold.expired",
        }
    }

    /// PENDING and CONFIRMED bookings occupy their seat.
    pub fn is_live(self) -> bool {
        matches!(self, BookingStatus::Pending | BookingStatus::Confirmed)
    }

    /// The status a seat has while a booking of this status is its latest.
    pub fn seat_status(self) -> SeatStatus {
        match self {
            BookingStatus::Pending => SeatStatus::Held,
            BookingStatus::Confirmed => SeatStatus::Booked,
            BookingStatus::Cancelled | BookingStatus::Expired => SeatStatus::Available,
        }
    }
}

status! {
    /// A seat's status in PostgreSQL (`seats.status`); Redis keeps none, it
    /// has the seat in `available` or under a lock.
    SeatStatus ("seat") {
        Available = "AVAILABLE",
        Held = "HELD",
        Booked = "BOOKED",
    }
}

status! {
    /// An event's status: PostgreSQL's `events.status`, the event hash's
    /// `status` field in Redis.
    EventStatus ("event") {
        /// Announced, not yet selling.
        Scheduled = "SCHEDULED",
        /// Taking holds.
        OnSale = "ON_SALE",
        Closed = "CLOSED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_reads_back_from_its_text_and_json() {
        fn round_trip<T>(
            all: &[T],
            text: fn(T) -> &'static str,
            parse: fn(&str) -> Result<T, UnknownStatus>,
        ) where
            T: Copy + PartialEq + fmt::Debug + serde::Serialize,
        {
            for &status in all {
                assert_eq!(parse(text(status)), Ok(status));
                assert_eq!(serde_json::to_value(status).unwrap(), text(status));
            }
        }
        round_trip(
            BookingStatus::ALL,
            BookingStatus::as_str,
            BookingStatus::parse,
        );
        round_trip(SeatStatus::ALL, SeatStatus::as_str, SeatStatus::parse);
        round_trip(EventStatus::ALL, EventStatus::as_str, EventStatus::parse);
    }

    #[test]
    fn unknown_text_names_its_kind() {
        let err = EventStatus::parse("on_sale").unwrap_err();
        assert_eq!(err.to_string(), "unknown event status \"on_sale\"");
        assert!(BookingStatus::parse("").is_err());
    }

    #[test]
    fn the_migrations_allow_exactly_these_statuses() {
        // The schema's three `CHECK (status IN (...))`, in table order: events, seats, bookings.
        let schema = include_str!("../migrations/V1__initial_schema.sql");
        let check = "CHECK (status IN (";
        let allowed: Vec<Vec<&str>> = schema
            .match_indices(check)
            .map(|(at, _)| {
                let list = &schema[at + check.len()..];
                list[..list.find(')').unwrap()]
                    .split(',')
                    .map(|s| s.trim().trim_matches('\''))
                    .collect()
            })
            .collect();
        assert_eq!(
            allowed,
            vec![
                EventStatus::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>(),
                SeatStatus::ALL.iter().map(|s| s.as_str()).collect(),
                BookingStatus::ALL.iter().map(|s| s.as_str()).collect(),
            ]
        );
    }
}

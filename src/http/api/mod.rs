//! One handler module per resource: each reads its request, calls the domain
//! module that owns the work, and turns the outcome into an answer (errors
//! become problems through the `From` mappings in [`super::problem`]).

pub mod bookings;
pub mod events;
pub mod ops;
pub mod room_settings;
pub mod seats;
pub mod users;
pub mod waiting_room;

pub mod codec;
pub mod postgres;
pub mod sqlite;

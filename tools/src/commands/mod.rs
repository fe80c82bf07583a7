//! One module per subcommand.

pub mod inspect;
pub mod pack;
pub mod verify;

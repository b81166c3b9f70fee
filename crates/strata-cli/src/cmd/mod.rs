//! One module per subcommand.

pub mod bench;
pub mod demo;
pub mod edge;
pub mod hub;
pub mod registry;

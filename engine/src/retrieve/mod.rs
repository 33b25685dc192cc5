//! The parts of the C-GET and C-MOVE SCPs that need no socket: the request
//! identifier, the sub-operation counts with the final status, and the table of
//! C-MOVE destinations.

pub mod identifier;
pub mod progress;
pub mod remote_ae;

pub use identifier::{parse_identifier, IdentifierError, RetrieveKeys};
pub use progress::{Progress, SubOperationResult};
pub use remote_ae::{RemoteAe, RemoteAeError, RemoteAeTable};

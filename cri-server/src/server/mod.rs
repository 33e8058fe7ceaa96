//! The CRI edge: tonic services. Protobuf types are converted to domain types here and
//! nowhere else.

pub mod container_list;
pub(crate) mod convert;
pub mod image;
mod reply;
pub mod runtime;
pub mod serve;

/// The answer of an RPC that a later piece of crius will implement.
pub(crate) fn unimplemented(rpc: &str) -> tonic::Status {
    tonic::Status::unimplemented(format!("crius does not implement {rpc} yet"))
}

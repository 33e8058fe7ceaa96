//! CRI protobuf ⇄ crius domain types for the RuntimeService.

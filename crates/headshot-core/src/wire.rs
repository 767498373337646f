//! Wire types and normalisation of loose client input (see shared/spec/wire.md).

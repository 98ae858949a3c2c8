//! Category lists in UT1 / squidGuard format: normalisation, loading, compiled matching.
pub mod normalise;

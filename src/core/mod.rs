//! The policy core: configuration, expressions, policy compilation and the one decision
//! pipeline. Nothing here knows the proxy, metrics or logs; everything is tested natively.

pub mod attributes;
pub mod config;
pub mod decision;
pub mod duration;
pub mod error;
pub mod expr;
pub mod hash;
pub mod headers;
pub mod identity;
pub mod lookalikes;
pub mod policy;
pub mod request;
pub mod tls;

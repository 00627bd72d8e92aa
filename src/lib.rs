//! The Rinha de Backend 2025 payment intermediary (placeholder: see issue 3).

pub mod journal;

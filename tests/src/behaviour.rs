//! Behaviours both brokers must show.

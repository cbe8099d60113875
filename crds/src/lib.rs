//! WsCluster types

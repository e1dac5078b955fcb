//! Admin API wire types (WIP).

//! Multi-process test support (WIP).

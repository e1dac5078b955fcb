//! Rebuildable read models (WIP).

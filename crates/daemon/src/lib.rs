//! batond (WIP).

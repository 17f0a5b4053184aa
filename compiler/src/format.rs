//! The canonical layout of `.pol` files (`polc fmt`). Not written yet.

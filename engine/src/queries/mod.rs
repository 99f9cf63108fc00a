//! Ready-made queries written with the DataFrame API.

pub mod q80;

//! The MPCL network (multi-scale associative memory fusion, emotion-specific prototype memory
//! banks, prototype relation distillation, co-occurrence memory retrieval, hierarchical head),
//! its losses and metrics, the local training loop, the conversion of parameters and memories to
//! the plain vectors the federation exchanges, and the dataset schema with its readers.
//!
//! Everything numeric is written against burn's run-time `Device`, so the same code trains on the
//! CPU (`flex`) and, with the `wgpu` feature, on a GPU.

pub mod data;

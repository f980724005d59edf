//! The one place where core errors become Python exceptions.
//!
//! Each core error type gets a `From` conversion into `PyErr` here, so binding code can use `?`
//! and the mapping (which exception class, which message) is reviewed in one file.

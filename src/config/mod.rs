//! Configuration: file, environment overrides, defaults and validation.

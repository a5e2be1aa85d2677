//! Amazon Kinesis Video Streams signaling, master role.

"""Media in and out: probing and decoding images and audio, the conditioning image as the reference pipelines
prepare it, mel spectrograms, frames kept on disk, and muxing the MP4. Imports only the top-level errors."""

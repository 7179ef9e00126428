"""Media in and out: probing and decoding images and audio, muxing video."""

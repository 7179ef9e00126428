"""The `ltx2` commands, one module each (render: lipsync, audiogen, keyframes; batch; validate; report; doctor;
presets; models): each parses its options (options: the shared ones, declared once in groups), calls plan, batch
and the engine, and prints."""

"""Tasks and their lifecycle: start, watch, read and wait, input, end; policy; request checks;
the watcher that writes a deleted registry back."""

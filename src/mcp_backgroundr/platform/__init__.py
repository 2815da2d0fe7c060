"""The seam to the operating system: processes and their trees, terminals, inotify, scans."""

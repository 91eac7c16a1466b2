// Test fixture: a "backend" that runs but never prints its `listening on` line.
// It prints its pid (and another line that must not be mistaken for readiness), then idles.
process.stdout.write(`pid ${process.pid}\n`);
process.stdout.write('listening soon, maybe\n');
setInterval(() => {}, 1 << 30);

// Test fixture: fails at startup the way a broken backend would.
process.stderr.write('boom: cannot read config\n');
process.exit(3);

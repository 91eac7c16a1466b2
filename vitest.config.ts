import { defineConfig } from 'vitest/config';

// Unit tests live beside the code; integration suites under test/ (not e2e: Playwright runs those).
export default defineConfig({
  test: {
    include: ['lab/**/*.test.ts', 'server/**/*.test.ts', 'sandbox-images/**/*.test.ts', 'test/{contract,server,lessons}/**/*.test.ts'],
    // Real processes start here; a loaded 2-core machine needs room.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: ['default'],
  },
});

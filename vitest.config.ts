import { defineConfig } from 'vitest/config';

// LAB_TEST_REPORT_DIR (set by .ci/run) adds a JSON report next to the usual summary, which
// .ci/run adds up with Playwright's into one `N passed, N failed` line.
const reportDir = process.env.LAB_TEST_REPORT_DIR;

// Unit tests live beside the code; integration suites under test/ (not e2e: Playwright runs those).
export default defineConfig({
  test: {
    include: ['lab/**/*.test.ts', 'web/src/lib/**/*.test.ts', 'server/**/*.test.ts', 'sandbox-images/**/*.test.ts', 'test/{contract,server,lessons}/**/*.test.ts'],
    // Real processes start here; a loaded 2-core machine needs room.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: reportDir ? ['default', ['json', { outputFile: `${reportDir}/vitest.json` }]] : ['default'],
  },
});

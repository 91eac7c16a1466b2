// Adds up the JSON reports of Vitest and Playwright (written when LAB_TEST_REPORT_DIR is set)
// into the one line CI ends with: `N passed, N failed, N skipped`. A runner whose report is
// missing (it never ran, or crashed) counts as one failure, so a broken run cannot look green.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

const dir = process.argv[2];
let passed = 0;
let failed = 0;
let skipped = 0;
const missing = [];

const vitestFile = path.join(dir, 'vitest.json');
if (existsSync(vitestFile)) {
  const v = JSON.parse(readFileSync(vitestFile, 'utf8'));
  passed += v.numPassedTests;
  failed += v.numFailedTests;
  skipped += (v.numPendingTests ?? 0) + (v.numTodoTests ?? 0);
  // A suite that failed to load has no tests but is a failure.
  failed += (v.testResults ?? []).filter((f) => f.status === 'failed' && (f.assertionResults ?? []).length === 0).length;
} else missing.push('vitest');

const pwFile = path.join(dir, 'playwright.json');
if (existsSync(pwFile)) {
  const p = JSON.parse(readFileSync(pwFile, 'utf8'));
  passed += (p.stats?.expected ?? 0) + (p.stats?.flaky ?? 0);
  failed += p.stats?.unexpected ?? 0;
  skipped += p.stats?.skipped ?? 0;
  failed += (p.errors ?? []).length;
} else missing.push('playwright');

// The soak (npm run soak) counts as one test where it ran.
const soakFile = path.join(dir, 'soak.json');
if (existsSync(soakFile)) {
  const k = JSON.parse(readFileSync(soakFile, 'utf8'));
  passed += k.passed ?? 0;
  failed += k.failed ?? 1;
}

if (missing.length) console.log(`(no report from: ${missing.join(', ')}; counted as failed)`);
failed += missing.length;
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);

#!/usr/bin/env bash
# From a clean checkout (no node_modules, no dist): install the locked dependencies, build with tsc, run the
# tests with Node's test runner. The last lines are the runner's summary (tests, pass, fail).
set -euo pipefail
cd "$(dirname "$0")/.."

npm ci --prefer-offline --no-audit --no-fund
npm run --silent build
node --test --test-reporter=spec dist/test/*.test.js

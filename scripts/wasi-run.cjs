#!/usr/bin/env -S node --no-warnings
// Cargo runner for wasm32-wasip1: runs a test binary under Node's WASI with the repository
// pre-opened at its own path, so the core's unit tests run compiled to wasm, as in Envoy.
'use strict';
const { readFileSync } = require('node:fs');
const { WASI } = require('node:wasi');
const path = require('node:path');

const [wasmFile, ...args] = process.argv.slice(2);
const repo = path.resolve(__dirname, '..');
const wasi = new WASI({
  version: 'preview1',
  args: [wasmFile, ...args],
  env: process.env,
  preopens: { [repo]: repo, '/tmp': '/tmp' },
  returnOnExit: true,
});
const instance = new WebAssembly.Instance(
  new WebAssembly.Module(readFileSync(wasmFile)),
  { wasi_snapshot_preview1: wasi.wasiImport },
);
process.exitCode = wasi.start(instance);

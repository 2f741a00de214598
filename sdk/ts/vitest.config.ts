import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    globalSetup: ['./test/generate.ts'],
    testTimeout: 60_000,
  },
})

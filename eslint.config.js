// ESLint with typescript-eslint's type-checked rules; Prettier owns formatting.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  // native/: the optional addons' C and their one-line CommonJS loaders (not TypeScript).
  { ignores: ['dist/', 'node_modules/', 'eslint.config.js', 'native/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      'max-len': ['warn', { code: 120, ignoreUrls: true }],
      // `const { a: _a, ...rest } = x` drops a field on purpose.
      '@typescript-eslint/no-unused-vars': ['error', { ignoreRestSiblings: true, argsIgnorePattern: '^_' }],
      // The wire code compares raw bytes (numbers) with numeric enum members (FrameKind, HandshakeKind, ...)
      // by design; the rule would need a cast on every such comparison.
      '@typescript-eslint/no-unsafe-enum-comparison': 'off',
      // node:test's test()/describe() return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            { from: 'package', name: ['test', 'describe', 'it', 'suite', 'before', 'after'], package: 'node:test' },
          ],
        },
      ],
    },
  },
);

import { mkdtempSync, readFileSync, writeFileSync, copyFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTokenizer } from '../src/tokenize.js';
import { encodeParallel } from '../src/tokenize-parallel.js';

const evalText = readFileSync(new URL('./fixtures/pydocs-eval.txt', import.meta.url), 'utf8');

describe.each(['tiny-llama-gqa', 'tiny-qwen2-gqa'])('tokenizer of %s', (name) => {
  const dir = new URL(`./fixtures/${name}/`, import.meta.url).pathname;
  const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8')) as { first_32_token_ids: number[]; num_tokens: number };

  test('eval text: token count and first 32 ids match the PyTorch reference', async () => {
    const tok = await loadTokenizer(dir);
    const ids = tok.encode(evalText);
    expect(ids.length).toBe(ref.num_tokens);
    expect(Array.from(ids.subarray(0, 32))).toEqual(ref.first_32_token_ids);
    expect(tok.vocabSize).toBe(4096);
  });

  test('round-trips text and adds no special tokens', async () => {
    const tok = await loadTokenizer(dir);
    const s = 'def f(x):\n    return x ** 2  # émoji ✓\n';
    const ids = tok.encode(s);
    expect(tok.decode(ids)).toBe(s);
    expect(tok.encode('').length).toBe(0);
  });
});

describe('parallel encoding', () => {
  test.each(['tiny-llama-gqa', 'tiny-qwen2-gqa'])('%s: worker chunks give exactly the ids of one encode', async (name) => {
    const dir = new URL(`./fixtures/${name}/`, import.meta.url).pathname;
    const tok = await loadTokenizer(dir);
    const whole = tok.encode(evalText);
    const par = await encodeParallel(tok, evalText, 3, 0);
    expect(par.chunks).toBe(3);
    expect(Buffer.compare(Buffer.from(par.ids.buffer), Buffer.from(whole.buffer))).toBe(0);
  });

  test('a tokenizer that prefixes the start of the text (add_prefix_space) is not cut', async () => {
    const d = mkdtempSync(join(tmpdir(), 'g2m-tokp-'));
    try {
      const json = JSON.parse(readFileSync(new URL('./fixtures/tiny-llama-gqa/tokenizer.json', import.meta.url), 'utf8'));
      json.pre_tokenizer.add_prefix_space = true;
      writeFileSync(join(d, 'tokenizer.json'), JSON.stringify(json));
      const tok = await loadTokenizer(d);
      const whole = tok.encode(evalText);
      // cutting would change the ids: 'X' at a chunk start would encode as ' X'
      expect(Array.from(tok.encode('a\nb'))).not.toEqual([...tok.encode('a\n'), ...tok.encode('b')]);
      const par = await encodeParallel(tok, evalText, 3, 0);
      expect(par.chunks).toBe(1);
      expect(Buffer.compare(Buffer.from(par.ids.buffer), Buffer.from(whole.buffer))).toBe(0);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});

test('missing or broken tokenizer files are input errors naming the file', async () => {
  const d = mkdtempSync(join(tmpdir(), 'g2m-tok-'));
  try {
    await expect(loadTokenizer(d)).rejects.toMatchObject({ code: 'ERR_TOKENIZER_MISSING', kind: 'input' });
    writeFileSync(join(d, 'tokenizer.json'), '{ not json');
    await expect(loadTokenizer(d)).rejects.toMatchObject({ code: 'ERR_TOKENIZER_JSON', message: expect.stringContaining('tokenizer.json') });
    // tokenizer_config.json is optional
    copyFileSync(new URL('./fixtures/tiny-llama-gqa/tokenizer.json', import.meta.url).pathname, join(d, 'tokenizer.json'));
    const tok = await loadTokenizer(d);
    expect(tok.encode('hello world').length).toBeGreaterThan(0);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

import { describe, expect, it } from "vitest";
import { LineReader, type Line } from "./stdio-transport.js";

const feed = (reader: LineReader, ...chunks: string[]): Line[] => {
  const lines: Line[] = [];
  for (const c of chunks) reader.push(Buffer.from(c), (l) => lines.push(l));
  return lines;
};

describe("LineReader", () => {
  it("splits lines across chunks, several per chunk, and drops a CR before the LF", () => {
    const lines = feed(new LineReader(1_000), '{"a":', '1}\n{"b":2}\r\n{"c"', ":3}\n");
    expect(lines).toEqual([
      { tooLarge: false, text: '{"a":1}' },
      { tooLarge: false, text: '{"b":2}' },
      { tooLarge: false, text: '{"c":3}' },
    ]);
  });

  it("skips a line over the limit, keeping only what names its request, and reads on", () => {
    const line = `{"result":{"text":"${"x".repeat(5_000)}"},"jsonrpc":"2.0","id":42}`;
    const reader = new LineReader(1_000);
    const lines = feed(reader, line.slice(0, 2_000), `${line.slice(2_000)}\n{"jsonrpc":"2.0","id":43,"result":{}}\n`);
    expect(lines[0]).toEqual({ tooLarge: true, bytes: line.length, id: 42 });
    expect(lines[1]).toEqual({ tooLarge: false, text: '{"jsonrpc":"2.0","id":43,"result":{}}' });
    // The id at the head (as most servers write it), a string id too.
    const head = feed(new LineReader(100), `{"jsonrpc":"2.0","id":"req-7","result":"${"y".repeat(500)}"}\n`);
    expect(head[0]).toMatchObject({ tooLarge: true, id: "req-7" });
  });
});

import { describe, expect, it } from "vitest";
import { idStripper } from "./http-fetch.js";

const strip = (...chunks: string[]): string => {
  const s = idStripper();
  return chunks.map((c) => s(Buffer.from(c)).toString()).join("");
};

describe("idStripper", () => {
  it("drops the id lines of an event stream and nothing else", () => {
    const stream = 'id: 7\ndata: {"a":1}\n\nevent: message\nid:8\ndata: {"text":"id: not a line start"}\n\n';
    expect(strip(stream)).toBe('data: {"a":1}\n\nevent: message\ndata: {"text":"id: not a line start"}\n\n');
  });

  it("across chunk boundaries, wherever they fall", () => {
    const stream = 'id: 12345\ndata: {"x":"y"}\n\nid: 6\ndata: {"id:":2}\n\n';
    const expected = 'data: {"x":"y"}\n\ndata: {"id:":2}\n\n';
    for (let a = 0; a < stream.length; a++) {
      for (let b = a; b < stream.length; b += 3) {
        expect(strip(stream.slice(0, a), stream.slice(a, b), stream.slice(b)), `split at ${a}, ${b}`).toBe(expected);
      }
    }
  });
});

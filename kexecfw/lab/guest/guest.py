"""Small helpers the lab's guest /init runs with the guest's Python (stdlib only).

    guest.py vmcore-headers VMCORE OUT      copy the ELF header, program headers and notes
    guest.py kallsyms-with-text SRC OUT     kallsyms plus the `_text` line kexec-tools needs
"""
import struct
import sys

PT_NOTE = 4


def vmcore_headers(src: str, out: str) -> None:
    """Copy /proc/vmcore up to the end of its last note: everything but the memory."""
    with open(src, "rb") as f:
        ehdr = f.read(64)
        if ehdr[:4] != b"\x7fELF" or ehdr[4] != 2:
            sys.exit(f"{src} is not an ELF64 file")
        endian = "<" if ehdr[5] == 1 else ">"
        phoff, = struct.unpack_from(endian + "Q", ehdr, 32)
        phentsize, phnum = struct.unpack_from(endian + "HH", ehdr, 54)
        f.seek(phoff)
        phdrs = f.read(phentsize * phnum)
        end = phoff + phentsize * phnum
        for i in range(phnum):
            p_type, _flags, p_offset, _v, _p, p_filesz = struct.unpack_from(endian + "IIQQQQ", phdrs, i * phentsize)
            if p_type == PT_NOTE:
                end = max(end, p_offset + p_filesz)
        f.seek(0)
        data = f.read(end)
    with open(out, "wb") as o:
        o.write(data)
    print(f"{end} bytes of headers and notes, {phnum} program headers")


def kallsyms_with_text(src: str, out: str) -> None:
    """Add `_text` = `_stext` - 0x10000 (arm64: the 64 KiB head before _stext) when it is missing."""
    with open(src) as f:
        text = f.read()
    symbols = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] in ("_text", "_stext"):
            symbols[parts[2]] = int(parts[0], 16)
    if "_text" not in symbols:
        if "_stext" not in symbols:
            sys.exit("kallsyms has neither _text nor _stext")
        line = "%016x T _text" % (symbols["_stext"] - 0x10000)
        text = line + "\n" + text
        print(f"added '{line}' to kallsyms")
    with open(out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    commands = {"vmcore-headers": vmcore_headers, "kallsyms-with-text": kallsyms_with_text}
    if len(sys.argv) != 4 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2], sys.argv[3])

package fit

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
)

// craftedELF describes a minimal ELF file made byte by byte, so the ISA
// note and version needs are tested without a compiler: one PT_LOAD
// mapping the whole file at 0x400000, a PT_GNU_PROPERTY note, and a
// PT_DYNAMIC whose DT_VERNEED lists needs.
type craftedELF struct {
	is32, big bool
	machine   elf.Machine // EM_X86_64 when 0
	typ       elf.Type    // ET_DYN when 0
	isaBits   uint32      // GNU_PROPERTY_X86_ISA_1_NEEDED; no note when 0
	isaUsed   uint32      // GNU_PROPERTY_X86_ISA_1_USED, which is no need
	needs     []craftedNeed
	gap       int // zero bytes before the dynamic segment, as .text would be
}

type craftedNeed struct {
	file     string
	versions []string
}

const craftBase = 0x400000

func (c craftedELF) bytes() []byte {
	var order binary.ByteOrder = binary.LittleEndian
	if c.big {
		order = binary.BigEndian
	}
	word := 8
	ehsize, phentsize := 64, 56
	if c.is32 {
		word, ehsize, phentsize = 4, 52, 32
	}
	put := func(b *bytes.Buffer, size int, v uint64) {
		var tmp [8]byte
		switch size {
		case 2:
			order.PutUint16(tmp[:], uint16(v))
		case 4:
			order.PutUint32(tmp[:], uint32(v))
		case 8:
			order.PutUint64(tmp[:], v)
		}
		b.Write(tmp[:size])
	}
	align := func(b *bytes.Buffer, a int) {
		for b.Len()%a != 0 {
			b.WriteByte(0)
		}
	}

	// Body, laid out after the headers: note, dynstr, verneed, gap, dynamic.
	const phnum = 3
	bodyStart := ehsize + phnum*phentsize
	var body bytes.Buffer
	body.Write(make([]byte, bodyStart))
	align(&body, 8)
	noteOff := body.Len()
	if c.isaBits != 0 || c.isaUsed != 0 {
		var desc bytes.Buffer
		for _, p := range []struct{ typ, bits uint32 }{{gnuPropertyX86ISA1Needed, c.isaBits}, {0xc0010002, c.isaUsed}} {
			if p.bits == 0 {
				continue
			}
			put(&desc, 4, uint64(p.typ))
			put(&desc, 4, 4)
			put(&desc, 4, uint64(p.bits))
			align(&desc, word)
		}
		put(&body, 4, 4)
		put(&body, 4, uint64(desc.Len()))
		put(&body, 4, ntGNUPropertyType0)
		body.WriteString("GNU\x00")
		align(&body, word)
		body.Write(desc.Bytes())
	}
	noteLen := body.Len() - noteOff

	strOff := body.Len()
	var str bytes.Buffer
	str.WriteByte(0)
	index := map[string]uint64{}
	intern := func(s string) uint64 {
		if i, ok := index[s]; ok {
			return i
		}
		index[s] = uint64(str.Len())
		str.WriteString(s)
		str.WriteByte(0)
		return index[s]
	}
	for _, n := range c.needs {
		intern(n.file)
		for _, v := range n.versions {
			intern(v)
		}
	}
	body.Write(str.Bytes())
	align(&body, 8)
	verneedOff := body.Len()
	for i, n := range c.needs {
		next := 16 + 16*len(n.versions)
		if i == len(c.needs)-1 {
			next = 0
		}
		put(&body, 2, 1) // vn_version
		put(&body, 2, uint64(len(n.versions)))
		put(&body, 4, intern(n.file))
		put(&body, 4, 16) // vn_aux
		put(&body, 4, uint64(next))
		for j, v := range n.versions {
			anext := 16
			if j == len(n.versions)-1 {
				anext = 0
			}
			put(&body, 4, 0) // vna_hash: nobody here checks it
			put(&body, 2, 0)
			put(&body, 2, uint64(2+j))
			put(&body, 4, intern(v))
			put(&body, 4, uint64(anext))
		}
	}
	body.Write(make([]byte, c.gap))
	align(&body, 8)
	dynOff := body.Len()
	for _, d := range []struct {
		tag elf.DynTag
		val uint64
	}{
		{elf.DT_STRTAB, craftBase + uint64(strOff)}, {elf.DT_STRSZ, uint64(str.Len())},
		{elf.DT_VERNEED, craftBase + uint64(verneedOff)}, {elf.DT_VERNEEDNUM, uint64(len(c.needs))},
		{elf.DT_NULL, 0},
	} {
		put(&body, word, uint64(d.tag))
		put(&body, word, d.val)
	}
	dynLen := body.Len() - dynOff
	total := body.Len()

	// Headers.
	var h bytes.Buffer
	h.WriteString(elf.ELFMAG)
	class, data := elf.ELFCLASS64, elf.ELFDATA2LSB
	if c.is32 {
		class = elf.ELFCLASS32
	}
	if c.big {
		data = elf.ELFDATA2MSB
	}
	h.Write([]byte{byte(class), byte(data), byte(elf.EV_CURRENT)})
	h.Write(make([]byte, elf.EI_NIDENT-h.Len()))
	typ, machine := c.typ, c.machine
	if typ == 0 {
		typ = elf.ET_DYN
	}
	if machine == 0 {
		machine = elf.EM_X86_64
	}
	put(&h, 2, uint64(typ))
	put(&h, 2, uint64(machine))
	put(&h, 4, uint64(elf.EV_CURRENT))
	put(&h, word, 0)              // e_entry
	put(&h, word, uint64(ehsize)) // e_phoff
	put(&h, word, 0)              // e_shoff: no section headers
	put(&h, 4, 0)                 // e_flags
	put(&h, 2, uint64(ehsize))
	put(&h, 2, uint64(phentsize))
	put(&h, 2, phnum)
	put(&h, 2, 0) // e_shentsize
	put(&h, 2, 0) // e_shnum
	put(&h, 2, 0) // e_shstrndx
	phdr := func(typ elf.ProgType, off, size, align int) {
		if c.is32 {
			put(&h, 4, uint64(typ))
			put(&h, 4, uint64(off))
			put(&h, 4, craftBase+uint64(off))
			put(&h, 4, craftBase+uint64(off))
			put(&h, 4, uint64(size))
			put(&h, 4, uint64(size))
			put(&h, 4, uint64(elf.PF_R))
			put(&h, 4, uint64(align))
			return
		}
		put(&h, 4, uint64(typ))
		put(&h, 4, uint64(elf.PF_R))
		put(&h, 8, uint64(off))
		put(&h, 8, craftBase+uint64(off))
		put(&h, 8, craftBase+uint64(off))
		put(&h, 8, uint64(size))
		put(&h, 8, uint64(size))
		put(&h, 8, uint64(align))
	}
	phdr(elf.PT_LOAD, 0, total, 0x1000)
	phdr(elf.PT_GNU_PROPERTY, noteOff, noteLen, word)
	phdr(elf.PT_DYNAMIC, dynOff, dynLen, word)
	out := body.Bytes()
	copy(out, h.Bytes())
	return out
}

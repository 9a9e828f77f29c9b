package fit

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
)

// Bounds on what one ELF file may make the scanner read. They are part of
// the definition of Needs (a file's needs beyond them are not seen), so
// they are constants: every reproducer must see the same.
const (
	maxProgHeaders  = 1 << 10  // program headers looked at
	maxDynamicBytes = 64 << 10 // of PT_DYNAMIC
	maxNoteBytes    = 64 << 10 // of one PT_NOTE / PT_GNU_PROPERTY segment
	maxVerneed      = 1 << 10  // verneed and vernaux records followed
	maxVersionName  = 256      // bytes of one version name
)

// The GNU property that says which x86 ISA level a file needs
// (binutils include/elf/common.h), and the note that carries properties.
const (
	ntGNUPropertyType0       = 5
	gnuPropertyX86ISA1Needed = 0xc0008002
)

// errOutside means a read reached past the file: the ELF file lies about
// its own layout, and what it states there counts for nothing.
var errOutside = errors.New("fit: offset outside the file")

// elfNeeds is what one ELF file states it needs.
type elfNeeds struct {
	glibc    string // highest GLIBC_ version of its verneed, "" for none
	x86Level int    // from GNU_PROPERTY_X86_ISA_1_NEEDED, 0 for none
}

// elfFile is one ELF file being read through its program headers only:
// the section headers sit at the end of the file, and a stripped binary
// needs none of them to be loaded, nor do we.
type elfFile struct {
	r     io.ReaderAt
	size  int64
	order binary.ByteOrder
	is64  bool
	mach  elf.Machine
	loads []elfSegment // PT_LOAD, for addresses to offsets
	dyn   []elfSegment // PT_DYNAMIC
	notes []elfSegment // PT_NOTE and PT_GNU_PROPERTY
	ioErr error        // the first failure of r itself (not errOutside)
}

type elfSegment struct {
	off, vaddr, filesz, align uint64
}

// scanELF reads what an ELF file of size bytes in r needs. A file that is
// no loadable ELF object (bad header, relocatable object, core dump) or
// that points outside itself needs nothing it states there; only a
// failure of r itself is an error.
func scanELF(r io.ReaderAt, size int64) (elfNeeds, error) {
	f := &elfFile{r: r, size: size}
	var out elfNeeds
	if !f.readHeaders() {
		return out, f.ioErr
	}
	if f.mach == elf.EM_X86_64 || f.mach == elf.EM_386 {
		out.x86Level = f.x86Level()
	}
	out.glibc = f.glibc()
	return out, f.ioErr
}

// read returns n bytes at off, or nil when they are not all in the file or
// r failed (recorded in f.ioErr).
func (f *elfFile) read(off, n uint64) []byte {
	if n == 0 || off >= uint64(f.size) || n > uint64(f.size)-off {
		return nil
	}
	b := make([]byte, n)
	if _, err := f.r.ReadAt(b, int64(off)); err != nil {
		if !errors.Is(err, errOutside) && !errors.Is(err, io.EOF) && f.ioErr == nil {
			f.ioErr = err
		}
		return nil
	}
	return b
}

func (f *elfFile) readHeaders() bool {
	ident := f.read(0, elf.EI_NIDENT)
	if ident == nil || !bytes.Equal(ident[:4], []byte(elf.ELFMAG)) {
		return false
	}
	switch elf.Data(ident[elf.EI_DATA]) {
	case elf.ELFDATA2LSB:
		f.order = binary.LittleEndian
	case elf.ELFDATA2MSB:
		f.order = binary.BigEndian
	default:
		return false
	}
	var phoff, phentsize, phnum uint64
	switch elf.Class(ident[elf.EI_CLASS]) {
	case elf.ELFCLASS64:
		f.is64 = true
		h := f.read(0, 64)
		if h == nil {
			return false
		}
		phoff = f.order.Uint64(h[32:])
		phentsize, phnum = uint64(f.order.Uint16(h[54:])), uint64(f.order.Uint16(h[56:]))
		if phentsize != 56 {
			return false
		}
	case elf.ELFCLASS32:
		h := f.read(0, 52)
		if h == nil {
			return false
		}
		phoff = uint64(f.order.Uint32(h[28:]))
		phentsize, phnum = uint64(f.order.Uint16(h[42:])), uint64(f.order.Uint16(h[44:]))
		if phentsize != 32 {
			return false
		}
	default:
		return false
	}
	h := f.read(16, 4)
	if h == nil {
		return false
	}
	if typ := elf.Type(f.order.Uint16(h)); typ != elf.ET_EXEC && typ != elf.ET_DYN {
		return false // objects and core dumps are not what ld.so loads
	}
	f.mach = elf.Machine(f.order.Uint16(h[2:]))
	phnum = min(phnum, maxProgHeaders)
	ph := f.read(phoff, phnum*phentsize)
	if ph == nil {
		return false
	}
	for i := uint64(0); i < phnum; i++ {
		p := ph[i*phentsize:]
		var typ elf.ProgType
		var s elfSegment
		if f.is64 {
			typ = elf.ProgType(f.order.Uint32(p))
			s = elfSegment{off: f.order.Uint64(p[8:]), vaddr: f.order.Uint64(p[16:]), filesz: f.order.Uint64(p[32:]), align: f.order.Uint64(p[48:])}
		} else {
			typ = elf.ProgType(f.order.Uint32(p))
			s = elfSegment{off: uint64(f.order.Uint32(p[4:])), vaddr: uint64(f.order.Uint32(p[8:])), filesz: uint64(f.order.Uint32(p[16:])), align: uint64(f.order.Uint32(p[28:]))}
		}
		switch typ {
		case elf.PT_LOAD:
			f.loads = append(f.loads, s)
		case elf.PT_DYNAMIC:
			f.dyn = append(f.dyn, s)
		case elf.PT_NOTE, elf.PT_GNU_PROPERTY:
			f.notes = append(f.notes, s)
		}
	}
	return true
}

// x86Level is the highest ISA level a GNU_PROPERTY_X86_ISA_1_NEEDED
// property of the file's notes states: its bits are baseline (1), v2, v3,
// v4. (ISA_1_USED is not a need: glibc's own libraries use AVX-512 in
// variants they pick only on CPUs that have it, and ld.so refuses to load
// a file only on ISA_1_NEEDED.)
func (f *elfFile) x86Level() int {
	level := 0
	for _, s := range f.notes {
		b := f.read(s.off, min(s.filesz, maxNoteBytes))
		align := uint64(4)
		if s.align == 8 {
			align = 8
		}
		for len(b) >= 12 {
			namesz, descsz, typ := uint64(f.order.Uint32(b)), uint64(f.order.Uint32(b[4:])), f.order.Uint32(b[8:])
			nameEnd := 12 + namesz
			descOff := alignUp(nameEnd, align)
			descEnd := descOff + descsz
			if namesz > uint64(len(b)) || descsz > uint64(len(b)) || descEnd > uint64(len(b)) {
				break
			}
			if typ == ntGNUPropertyType0 && namesz == 4 && string(b[12:16]) == "GNU\x00" {
				level = max(level, f.isaNeeded(b[descOff:descEnd]))
			}
			b = b[min(alignUp(descEnd, align), uint64(len(b))):]
		}
	}
	return level
}

// isaNeeded reads a property array (NT_GNU_PROPERTY_TYPE_0's descriptor).
func (f *elfFile) isaNeeded(desc []byte) int {
	pad := uint64(4)
	if f.is64 {
		pad = 8
	}
	level := 0
	for len(desc) >= 8 {
		typ, datasz := f.order.Uint32(desc), uint64(f.order.Uint32(desc[4:]))
		if datasz > uint64(len(desc))-8 {
			break
		}
		if typ == gnuPropertyX86ISA1Needed && datasz == 4 {
			bits := f.order.Uint32(desc[8:])
			for l := 4; l >= 1; l-- {
				if bits&(1<<(l-1)) != 0 {
					level = max(level, l)
					break
				}
			}
		}
		desc = desc[min(8+alignUp(datasz, pad), uint64(len(desc))):]
	}
	return level
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) &^ (a - 1) }

// offsetOf maps a virtual address to its file offset through the PT_LOAD
// segments, as the dynamic loader sees the file.
func (f *elfFile) offsetOf(addr uint64) (uint64, bool) {
	for _, s := range f.loads {
		if addr >= s.vaddr && addr-s.vaddr < s.filesz {
			return s.off + (addr - s.vaddr), true
		}
	}
	return 0, false
}

// glibc is the highest GLIBC_ version the file's version needs
// (DT_VERNEED, .gnu.version_r) name, whatever library they are needed
// from (libc.so.6, libm.so.6, ld-linux…: glibc versions them all alike).
func (f *elfFile) glibc() string {
	var verneed, verneednum, strtab, strsz uint64
	var haveVerneed, haveStrtab bool
	for _, s := range f.dyn {
		b := f.read(s.off, min(s.filesz, maxDynamicBytes))
		entsz := 8
		if f.is64 {
			entsz = 16
		}
		for len(b) >= entsz {
			var tag, val uint64
			if f.is64 {
				tag, val = f.order.Uint64(b), f.order.Uint64(b[8:])
			} else {
				tag, val = uint64(f.order.Uint32(b)), uint64(f.order.Uint32(b[4:]))
			}
			b = b[entsz:]
			switch elf.DynTag(tag) {
			case elf.DT_NULL:
				b = nil
			case elf.DT_VERNEED:
				verneed, haveVerneed = val, true
			case elf.DT_VERNEEDNUM:
				verneednum = val
			case elf.DT_STRTAB:
				strtab, haveStrtab = val, true
			case elf.DT_STRSZ:
				strsz = val
			}
		}
	}
	if !haveVerneed || !haveStrtab {
		return ""
	}
	off, ok := f.offsetOf(verneed)
	if !ok {
		return ""
	}
	stroff, ok := f.offsetOf(strtab)
	if !ok {
		return ""
	}
	best := ""
	records := 0
	for i := uint64(0); i < verneednum && records < maxVerneed; i++ {
		vn := f.read(off, 16)
		if vn == nil || f.order.Uint16(vn) != 1 { // vn_version
			return best
		}
		cnt, aux, next := uint64(f.order.Uint16(vn[2:])), uint64(f.order.Uint32(vn[8:])), uint64(f.order.Uint32(vn[12:]))
		aoff := off + aux
		for j := uint64(0); j < cnt && records < maxVerneed; j++ {
			records++
			a := f.read(aoff, 16)
			if a == nil {
				return best
			}
			if name := f.str(stroff, strsz, uint64(f.order.Uint32(a[8:]))); name != "" {
				best = maxGlibc(best, name)
			}
			anext := uint64(f.order.Uint32(a[12:]))
			if anext == 0 {
				break
			}
			aoff += anext
		}
		records++
		if next == 0 {
			break
		}
		off += next
	}
	return best
}

// str reads the NUL-terminated string at index i of the string table at
// off of strsz bytes, or "" when it is not within the table and bounds.
func (f *elfFile) str(off, strsz, i uint64) string {
	if i >= strsz {
		return ""
	}
	n := min(strsz-i, maxVersionName)
	n = min(n, uint64(f.size)-min(off+i, uint64(f.size)))
	b := f.read(off+i, n)
	end := bytes.IndexByte(b, 0)
	if end < 0 {
		return ""
	}
	return string(b[:end])
}

#include "textflag.h"

// func valgrindRequest(args *[6]uintptr) uintptr
//
// Valgrind's client request on amd64 (valgrind.h,
// VALGRIND_DO_CLIENT_REQUEST_EXPR): RAX points at {request, arg1..arg5},
// RDX holds the default result, the magic preamble (four rotations of RDI
// by 128 bits in all, which leave it as it was) and xchg %rbx,%rbx mark
// the request; under Valgrind RDX then holds its answer. On a real CPU the
// sequence does nothing and the default (0) comes back.
TEXT ·valgrindRequest(SB), NOSPLIT, $0-16
	MOVQ args+0(FP), AX
	MOVQ $0, DX
	// rolq $3, %rdi; rolq $13, %rdi; rolq $61, %rdi; rolq $51, %rdi
	BYTE $0x48; BYTE $0xc1; BYTE $0xc7; BYTE $0x03
	BYTE $0x48; BYTE $0xc1; BYTE $0xc7; BYTE $0x0d
	BYTE $0x48; BYTE $0xc1; BYTE $0xc7; BYTE $0x3d
	BYTE $0x48; BYTE $0xc1; BYTE $0xc7; BYTE $0x33
	// xchgq %rbx, %rbx
	BYTE $0x48; BYTE $0x87; BYTE $0xdb
	MOVQ DX, ret+8(FP)
	RET

/* arm64 purgatory entry: the kernel's kexec relocation code (arch/arm64/kernel/relocate_kernel.S)
 * jumps here with the MMU and D-cache off. Set up a stack, check the other segments' sha256,
 * then enter the next kernel as Documentation/arch/arm64/booting.rst asks:
 * x0 = physical address of the DTB, x1 = x2 = x3 = 0. On a checksum mismatch, park the CPU. */

	.section .text.purgatory_entry, "ax"
	.globl	purgatory_start
	.type	purgatory_start, %function
	.balign	8
purgatory_start:
	adrp	x9, purgatory_stack_top
	add	x9, x9, :lo12:purgatory_stack_top
	mov	sp, x9
	bl	purgatory_main
	cbnz	w0, .Lmismatch
	adrp	x9, purgatory_dtb_addr
	ldr	x0, [x9, :lo12:purgatory_dtb_addr]
	adrp	x9, purgatory_kernel_entry
	ldr	x10, [x9, :lo12:purgatory_kernel_entry]
	mov	x1, xzr
	mov	x2, xzr
	mov	x3, xzr
	br	x10
.Lmismatch:
	wfe
	b	.Lmismatch
	.size	purgatory_start, . - purgatory_start

	/* Patched by kexecfw when it links the purgatory (PurgatoryObject.symbols). */
	.section .data.purgatory_boot, "aw"
	.balign	8
	.globl	purgatory_kernel_entry
	.type	purgatory_kernel_entry, %object
purgatory_kernel_entry:
	.quad	0
	.size	purgatory_kernel_entry, 8
	.globl	purgatory_dtb_addr
	.type	purgatory_dtb_addr, %object
purgatory_dtb_addr:
	.quad	0
	.size	purgatory_dtb_addr, 8

	.section .bss.purgatory_stack, "aw", %nobits
	.balign	16
purgatory_stack:
	.space	4096		/* sha256 needs well under 1 KiB */
purgatory_stack_top:

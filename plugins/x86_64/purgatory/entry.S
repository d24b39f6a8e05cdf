/* x86_64 purgatory entry. relocate_kernel (arch/x86/kernel/relocate_kernel_64.S) jumps here in
 * 64-bit mode with identity-mapped page tables, interrupts off and no usable stack or GDT.
 * We load our own GDT and stack, run the C checks, then enter the kernel's 64-bit entry as
 * Documentation/arch/x86/boot.rst ("64-bit Boot Protocol") requires: CS = __BOOT_CS (0x10),
 * DS/ES/SS = __BOOT_DS (0x18), both flat; %rsi = the boot_params address; interrupts off. */

#define BOOT_CS 0x10
#define BOOT_DS 0x18

	.text
	.code64
	.globl	purgatory_start
	.type	purgatory_start, @function
purgatory_start:
	cli
	cld
	lgdt	gdt_descriptor(%rip)
	movl	$BOOT_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	%eax, %fs
	movl	%eax, %gs
	leaq	stack_end(%rip), %rsp
	/* reload %cs with our own 64-bit code descriptor */
	pushq	$BOOT_CS
	leaq	1f(%rip), %rax
	pushq	%rax
	lretq
1:
	call	purgatory_main		/* returns only when the segments are intact */
	movq	purgatory_boot_params(%rip), %rsi
	movq	purgatory_kernel_entry(%rip), %rax
	xorl	%ebx, %ebx		/* %rbx = 0: the bootstrap processor, as the kernel's own purgatory passes */
	xorl	%ecx, %ecx
	xorl	%edx, %edx
	xorl	%edi, %edi
	xorl	%ebp, %ebp
	xorl	%r8d, %r8d
	xorl	%r9d, %r9d
	xorl	%r10d, %r10d
	xorl	%r11d, %r11d
	xorl	%r12d, %r12d
	xorl	%r13d, %r13d
	xorl	%r14d, %r14d
	xorl	%r15d, %r15d
	jmpq	*%rax
	.size	purgatory_start, . - purgatory_start

	.data
	/* Patched by kexecfw when it links the purgatory (PurgatoryObject.symbols). */
	.balign	8
	.globl	purgatory_kernel_entry
	.type	purgatory_kernel_entry, @object
purgatory_kernel_entry:
	.quad	0
	.size	purgatory_kernel_entry, 8
	.globl	purgatory_boot_params
	.type	purgatory_boot_params, @object
purgatory_boot_params:
	.quad	0
	.size	purgatory_boot_params, 8

	.balign	16
gdt:
	.quad	0			/* 0x00: null */
	.quad	0			/* 0x08: unused */
	.quad	0x00af9a000000ffff	/* 0x10: __BOOT_CS, 64-bit code, execute/read, flat */
	.quad	0x00cf92000000ffff	/* 0x18: __BOOT_DS, data, read/write, flat 4 GiB */
gdt_end:
	.balign	8
	.word	0, 0, 0			/* pad so the descriptor's base is 8-byte aligned */
gdt_descriptor:
	.word	gdt_end - gdt - 1
	.quad	gdt			/* R_X86_64_64: the linker writes the GDT's physical address */

	.bss
	.balign	16
stack:
	.skip	16384
stack_end:

	.section .note.GNU-stack, "", @progbits

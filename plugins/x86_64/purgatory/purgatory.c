/* x86_64 purgatory main: check the other segments' sha256 (kexecfw/purgatory/verify.c) and
 * refuse to enter a kernel whose segments changed since the load. */
#include <stdint.h>

int purgatory_verify_sha256(void);
void purgatory_main(void);

#define COM1 0x3f8

static inline void outb(uint8_t value, uint16_t port)
{
	__asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t value;
	__asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
	return value;
}

/* Best effort: if COM1 exists and is set up (console=ttyS0), say why we stop. */
static void serial_puts(const char *s)
{
	for (; *s; s++) {
		int spin;
		for (spin = 0; spin < 100000 && !(inb(COM1 + 5) & 0x20); spin++)
			;
		outb((uint8_t)*s, COM1);
	}
}

void purgatory_main(void)
{
	if (purgatory_verify_sha256() == 0)
		return;
	serial_puts("kexecfw purgatory: sha256 mismatch, a segment changed after the load; halting\r\n");
	for (;;)
		__asm__ volatile("cli; hlt");
}

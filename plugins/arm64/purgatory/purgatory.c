/* arm64 purgatory main: the shared sha256 check (kexecfw/purgatory/verify.c). Nothing else is
 * needed before entering the next kernel: the DTB carries everything it must know. */
int purgatory_verify_sha256(void);
int purgatory_main(void);

int purgatory_main(void)
{
	return purgatory_verify_sha256();
}

"""Every text of the certificates and labels, in French and English, in one place; and the formats (sizes,
times) a person reads in each language.

``texts(lang)`` gives the strings of one language by key; templates use them as ``t.key``. French first: the
workshop's own language.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

LANGUAGES = ("fr", "en")
DEFAULT = "fr"

_STRINGS: dict[str, tuple[str, str]] = {  # key: (French, English)
    "title": ("Certificat d'effacement des données", "Data erasure certificate"),
    "title_imaging": ("Certificat de préparation", "Preparation certificate"),
    "batch_title": ("Certificat d'effacement d'un lot", "Batch data erasure certificate"),
    "intro": (
        "{workshop} certifie que les supports de stockage de cet ordinateur ont été effacés un par un "
        "selon la norme NIST SP 800-88 Rév. 1, puis vérifiés par relecture, comme détaillé ci-dessous.",
        "{workshop} certifies that the storage drives of this computer were erased one by one per NIST "
        "SP 800-88 Rev. 1, then verified by reading them back, as detailed below.",
    ),
    "intro_skipped": (
        "{workshop} certifie que les supports de stockage internes de cet ordinateur ont été effacés un par un "
        "selon la norme NIST SP 800-88 Rév. 1, puis vérifiés par relecture, comme détaillé ci-dessous ; les "
        "supports amovibles listés plus bas n'ont pas été effacés.",
        "{workshop} certifies that the internal storage drives of this computer were erased one by one per NIST "
        "SP 800-88 Rev. 1, then verified by reading them back, as detailed below; the removable media listed "
        "below were not erased.",
    ),
    "intro_imaging": (
        "Aucun effacement n'est enregistré pour cet ordinateur : ce certificat n'atteste aucun "
        "effacement, seulement l'installation vérifiée ci-dessous.",
        "No erasure is recorded for this computer: this certificate states no erasure, only the "
        "verified installation below.",
    ),
    "batch_intro": (
        "{workshop} certifie que chaque support de stockage des {machines} ordinateurs du lot "
        "« {lot} » a été effacé selon la norme NIST SP 800-88 Rév. 1 et vérifié par relecture.",
        "{workshop} certifies that every storage drive of the {machines} computers of lot "
        "\u201c{lot}\u201d was erased per NIST SP 800-88 Rev. 1 and verified by reading it back.",
    ),
    "batch_intro_skipped": (
        "{workshop} certifie que chaque support de stockage interne des {machines} ordinateurs du lot "
        "« {lot} » a été effacé selon la norme NIST SP 800-88 Rév. 1 et vérifié par relecture ; les supports "
        "amovibles listés plus bas n'ont pas été effacés.",
        "{workshop} certifies that every internal storage drive of the {machines} computers of lot "
        "\u201c{lot}\u201d was erased per NIST SP 800-88 Rev. 1 and verified by reading it back; the removable "
        "media listed below were not erased.",
    ),
    "certificate_id": ("Numéro du certificat", "Certificate number"),
    "issued": ("Émis le", "Issued"),
    "workshop": ("Atelier", "Workshop"),
    "lot": ("Lot (livraison du donateur)", "Lot (donor's delivery)"),
    "software": ("Logiciel", "Software"),
    "machine": ("Ordinateur", "Computer"),
    "asset_id": ("Identifiant", "Asset id"),
    "mac": ("Adresse MAC", "MAC address"),
    "maker_model": ("Fabricant et modèle", "Maker and model"),
    "serial": ("Numéro de série", "Serial number"),
    "cpu": ("Processeur", "Processor"),
    "ram": ("Mémoire", "Memory"),
    "disks": ("Disques", "Drives"),
    "drives": ("Effacement, support par support", "Erasure, drive by drive"),
    "drive": ("Support", "Drive"),
    "size": ("Taille", "Size"),
    "interface": ("Interface", "Interface"),
    "rotational": ("Type", "Type"),
    "hdd": ("disque dur", "hard disk"),
    "ssd": ("mémoire flash", "flash"),
    "method": ("Méthode", "Method"),
    "category": ("Catégorie NIST SP 800-88", "NIST SP 800-88 category"),
    "clear": ("Clear (effacement par écriture)", "Clear (overwritten)"),
    "purge": ("Purge (effacement par la commande du support)", "Purge (the drive's own erase command)"),
    "tools": ("Outils et versions", "Tools and versions"),
    "when": ("Début \u2013 fin", "Start \u2013 end"),
    "passes": ("Passes", "Passes"),
    "verification": ("Vérification", "Verification"),
    "verify_full": ("relecture complète", "full read-back"),
    "verify_sample": ("relecture par échantillons", "sampled read-back"),
    "pattern_zeros": ("que des zéros", "zeros only"),
    "pattern_ones": ("que des 0xFF", "0xFF only"),
    "pattern_zeros-or-ones": ("que des zéros ou des 0xFF", "zeros or 0xFF only"),
    "pattern_changed": ("aucun bloc inchangé", "no block unchanged"),
    "samples": ("{samples} échantillons", "{samples} samples"),
    "checked": (
        "{size} lus, {mismatches} écart(s)",
        "{size} read, {mismatches} mismatch(es)",
    ),
    "result_ok": ("réussie", "passed"),
    "hidden": ("Zones cachées (HPA/DCO)", "Hidden areas (HPA/DCO)"),
    "hidden_none": ("aucune", "none"),
    "hidden_unknown": ("non signalées par le support", "not reported by the drive"),
    "hidden_removed": ("supprimées avant l'effacement", "removed before the erasure"),
    "smart": ("État SMART", "SMART health"),
    "smart_passed": ("bon", "passed"),
    "smart_failed": ("défaillant", "failing"),
    "smart_unknown": ("non disponible", "not available"),
    "power_on": ("{hours} h de fonctionnement", "{hours} power-on hours"),
    "reallocated": ("{count} secteurs réalloués", "{count} reallocated sectors"),
    "fallback": ("Pourquoi pas plus fort", "Why not stronger"),
    "operator": ("Opérateur", "Operator"),
    "imaging": ("Installation vérifiée", "Verified installation"),
    "image": ("Image et version", "Image and version"),
    "root_digest": ("Empreinte racine (sha256)", "Root digest (sha256)"),
    "chunks": ("Blocs vérifiés", "Chunks verified"),
    "read_back": ("Relecture", "Read-back"),
    "hooks": ("Étapes après l'installation", "Steps after the installation"),
    "hook_ok": ("réussie", "succeeded"),
    "hook_failed": ("échouée (code {code})", "failed (code {code})"),
    "none": ("aucune", "none"),
    "unknown": ("inconnu", "unknown"),
    "signature": ("Signature et vérification", "Signature and verification"),
    "signed_by": (
        "Signé (Ed25519) par la clé de l'atelier {fingerprint}. Le fichier JSON signé de ce certificat "
        "fait foi ; pour le vérifier hors ligne avec la clé publique de l'atelier :",
        "Signed (Ed25519) by the workshop's key {fingerprint}. The signed JSON file of this certificate "
        "is authoritative; to verify it offline with the workshop's public key:",
    ),
    "page": ("Page", "Page"),
    "machines": ("Ordinateurs", "Computers"),
    "summary_drives": (
        "{drives} supports effacés sur {machines} ordinateurs ({purge} Purge, {clear} Clear).",
        "{drives} drives erased on {machines} computers ({purge} Purge, {clear} Clear).",
    ),
    "label_date": ("Préparé le", "Prepared"),
    "labels": ("Étiquettes", "Labels"),
    "skipped": ("Supports non effacés", "Drives not erased"),
    "skipped_intro": (
        "Ces supports n'ont pas été effacés ; ce certificat ne les couvre pas :",
        "These drives were not erased; this certificate does not cover them:",
    ),
    "used": ("usure {percent}\u00a0%", "{percent}\u00a0% used"),
    "media_errors": ("{count} erreurs de support", "{count} media errors"),
    "pending": ("{count} secteurs en attente", "{count} pending sectors"),
    "disk": ("Disque", "Disk"),
    "notes": ("Notes", "Notes"),
    "hidden_left": (
        "zone cachée laissée en place, non effacée : {what}",
        "hidden area left in place, not erased: {what}",
    ),
    "cores": ("{count} cœurs", "{count} cores"),
    "sectors": ("{count} secteurs", "{count} sectors"),
}


def texts(lang: str) -> Mapping[str, str]:
    """The strings of ``lang`` (one of LANGUAGES) by key."""
    if lang not in LANGUAGES:
        raise ValueError(f"no certificate language {lang!r} (fr or en)")
    column = LANGUAGES.index(lang)
    return MappingProxyType({key: pair[column] for key, pair in _STRINGS.items()})


def size(count: float, lang: str) -> str:
    """Bytes as a person reads them, powers of 1000: ``256 Go`` / ``256 GB``, ``1,5 To`` / ``1.5 TB``."""
    units = ("o", "ko", "Mo", "Go", "To", "Po") if lang == "fr" else ("B", "kB", "MB", "GB", "TB", "PB")
    value, unit = float(count), 0
    while value >= 1000 and unit < len(units) - 1:
        value, unit = value / 1000, unit + 1
    text = f"{value:.0f}" if unit == 0 or value >= 100 else f"{value:.1f}"
    return f"{text.replace('.', ',') if lang == 'fr' else text}\u00a0{units[unit]}"


def moment(iso_time: str) -> str:
    """An ISO UTC time as printed: ``2026-12-06 23:10:05 UTC`` (the same in both languages)."""
    return f"{iso_time[:10]} {iso_time[11:19]} UTC" if len(iso_time) >= 19 else iso_time


def memory(mib: int, lang: str) -> str:
    """Installed RAM as sold: ``8 Gio`` / ``8 GiB`` (powers of 1024)."""
    gib = mib / 1024
    text = f"{gib:.0f}" if gib >= 10 or gib == int(gib) else f"{gib:.1f}"
    return f"{text.replace('.', ',') if lang == 'fr' else text}\u00a0{'Gio' if lang == 'fr' else 'GiB'}"
